#!/usr/bin/env python
"""Quality per minute: training recipes race for the same budget on the same machine, then are scored.

Each arm is a named recipe (a preset plus ``--set`` overrides, listed by ``--list-arms``) trained with
the real ``cyclegan train`` from the same seed on the same data, in time slices taken round-robin
(``--slices``; each slice is ``cyclegan train --resume``), so load from other processes that comes and
goes hits every arm alike. The budget is counted on the training loop alone (start-up, checkpoint
loading and the classifier are outside it), by default as CPU time of the training process on a CPU
(``--clock cpu``: the slice ends with SIGINT, which saves and stops, once the process has used its
share; a shared machine then slows every arm's wall clock but not its budget) and as wall time on a
GPU (``--clock wall``: ``--max-minutes``). Then ``cyclegan evaluate --no-inception --classifier``
translates the test split and scores both directions: the domain classifier's share of translations
assigned to the target domain (and its Frechet distance), and cycle L1. The paper recipe is the
reference row; the table goes to stdout and everything to JSON.

    python bench/quality_race.py                                   # CPU: 64 px, 20 min per arm
    python bench/quality_race.py --arms paper,bf16,fast --minutes 40 --size 128
    python bench/quality_race.py --device cuda --size 256 --ngf 64 --n-blocks 9 --minutes 60
    python bench/quality_race.py --tiny                            # seconds, synthetic data (the CI test)

``--runs DIR`` keeps the runs; running again with the same DIR continues arms that have slices left
and rescores finished ones without training them again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import fmt, fmt_ratio

from cyclegan.fileio import write_json_atomic
from cyclegan.synthetic import make_unpaired_dataset

STATE = "race_state.json"  # per run directory: the arm, its slices and the budget they used
EVAL = "race_eval.json"


@dataclass(frozen=True)
class Arm:
    what: str  # one line for the table: what this arm changes against the paper recipe
    sets: dict = field(default_factory=dict)  # config keys -> values (--set)
    preset: str = "cyclegan"


# The paper recipe (the reference, fp32 as the official code runs), the same in bf16 (a speed lever
# that learns the same thing, see README "Performance"), then one change at a time on top of bf16 (the
# literature's ways to converge faster), then combinations. Keys are config keys, so a README ablation
# row maps to flags one for one.
BF16 = {"train.precision": "bf16"}
ARMS: dict[str, Arm] = {
    "paper": Arm("CycleGAN paper: LSGAN, cycle 10, identity 5, pool 50, Adam 2e-4 (0.5, 0.999), batch 1, "
                 "fp32"),
    "bf16": Arm("paper in bf16 autocast (speed only)", BF16),
    "bf16-cl": Arm("bf16 + channels_last (speed only)", {**BF16, "train.channels_last": True}),
    "bs4-sqrt": Arm("bf16, batch 4 with lr x2 (square-root rule)",
                    {**BF16, "train.batch_size": 4, "optim.lr_scaling": "sqrt"}),
    "ttur": Arm("bf16, two time-scales: G 1e-4, D 4e-4", {**BF16, "optim.lr": 1e-4, "optim.d_lr_ratio": 4.0}),
    "ttur2": Arm("bf16, two time-scales: G 2e-4, D 4e-4", {**BF16, "optim.d_lr_ratio": 2.0}),
    "resize": Arm("bf16, resize-convolution upsampling", {**BF16, "model.generator.upsample": "resize"}),
    "ema": Arm("bf16, generator EMA 0.999", {**BF16, "train.ema_decay": 0.999}),
    "diffaug": Arm("bf16, DiffAugment translation,cutout", {**BF16, "train.diffaug": "translation,cutout"}),
    "lecam": Arm("bf16, LeCam 0.1", {**BF16, "loss.lambda_lecam": 0.1}),
    "sn": Arm("bf16, spectral norm in D", {**BF16, "model.discriminator.spectral_norm": True}),
    "id0": Arm("bf16, no identity loss", {**BF16, "loss.lambda_id": 0.0}),
    "id1": Arm("bf16, identity 1 (0.1 x cycle)", {**BF16, "loss.lambda_id": 1.0}),
    "lr4e-4": Arm("bf16, Adam 4e-4 for G and D", {**BF16, "optim.lr": 4e-4}),
    "fastcut": Arm("bf16, FastCUT (one-sided A->B, PatchNCE 10)", BF16, preset="fastcut"),
    "fast": Arm("the fast preset", {}, preset="fast"),
}
TINY_ARMS = ("paper", "ema")


def base_sets(args) -> dict:
    """What every arm shares: data, networks, seed, threads and quiet logging."""
    return {
        "data.dataroot": str(args.dataroot.resolve()),
        "data.load_size": round(args.size * harness.LOAD_RATIO), "data.crop_size": args.size,
        "data.num_workers": args.num_workers,
        "model.generator.ngf": args.ngf, "model.generator.n_blocks": args.n_blocks,
        "model.discriminator.ndf": args.ndf, "model.discriminator.n_layers": args.n_layers,
        "train.device": args.device, "train.seed": args.seed, "train.num_threads": args.threads,
        "train.tensorboard": False, "train.log_every": args.log_every,
        # Only the end of each slice writes checkpoints/latest (what the next slice resumes from).
        "train.save_latest_every": 10**9, "train.save_epoch_every": 10**6,
    }


def parse_arm(text: str) -> tuple[str, Arm]:
    """``NAME`` from ARMS, or ``NAME:key=value;key=value`` (on the paper preset), or ``NAME@PRESET:...``."""
    if ":" not in text:
        if text not in ARMS:
            raise SystemExit(f"error: unknown arm {text!r}; see --list-arms, or --arm NAME:key=value;...")
        return text, ARMS[text]
    head, body = text.split(":", 1)
    name, _, preset = head.partition("@")
    sets = {}
    for item in (t.strip() for t in body.split(";") if t.strip()):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: arm {text!r}: {item!r} is not key=value")
        sets[key.strip()] = value.strip()
    what = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in sets.items()) or "as the preset"
    return name, Arm(what if not preset else f"preset {preset}: {what}", sets, preset or "cyclegan")


# ------------------------------------------------------------------------------------------ slices


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_new_records(path: Path, offset: int) -> tuple[list[dict], int]:
    """log.jsonl records after byte ``offset`` (complete lines only) and the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records, offset + end


@dataclass
class Slice:
    """One ``cyclegan train`` process of one arm."""

    arm: str
    index: int
    budget_s: float  # of the clock in use, for this slice
    proc: subprocess.Popen | None = None
    log_offset: int = 0
    loop_started: float | None = None  # the clock's reading when the training loop began
    wall_started: float = 0.0
    stop_sent: bool = False
    used_s: float = 0.0
    records: list = field(default_factory=list)


class Race:
    def __init__(self, args, arms: dict[str, Arm], runs: Path, log: harness.Progress) -> None:
        self.args, self.arms, self.runs, self.log = args, arms, runs, log
        self.budget_s = args.minutes * 60.0
        self.state = {name: self._load_state(name) for name in arms}
        self._last_cpu: dict[str, float] = {}  # per arm: the last CPU reading (a finished process has none)

    def arm_dir(self, name: str) -> Path:
        """The race's files of one arm: state, slice logs, scores; the training run is in ``run/``."""
        return self.runs / name

    def run_dir(self, name: str) -> Path:
        return self.runs / name / "run"

    def _load_state(self, name: str) -> dict:
        path = self.arm_dir(name) / STATE
        fresh = {"arm": name, "preset": self.arms[name].preset, "sets": self.arms[name].sets, "slices": [],
                 "clock": self.args.clock, "budget_s": self.budget_s}
        if not path.is_file():
            return fresh
        saved = json.loads(path.read_text())
        same = all(saved.get(k) == fresh[k] for k in ("preset", "sets", "clock", "budget_s"))
        if not same:
            raise SystemExit(f"error: {self.arm_dir(name)} holds arm {name} trained differently (recipe, "
                             "clock or budget); use another --runs folder")
        return saved

    def used(self, name: str) -> float:
        return sum(s["used_s"] for s in self.state[name]["slices"])

    def slices_left(self, name: str) -> int:
        return self.args.slices - len(self.state[name]["slices"])

    def command(self, name: str, budget_s: float) -> list[str]:
        arm, run = self.arms[name], self.run_dir(name)
        cmd = [sys.executable, "-m", "cyclegan", "train", "--out", str(run), "--quiet"]
        if self.state[name]["slices"]:
            cmd.append("--resume")  # the saved config.json holds the recipe
        else:
            # --overwrite: a first slice killed before its first checkpoint leaves a run folder with
            # nothing to resume; the race owns the folder, so its first slice starts it afresh
            cmd += ["--overwrite", "--preset", arm.preset,
                    *harness.set_args({**base_sets(self.args), **arm.sets})]
        if self.args.clock == "wall":
            cmd += ["--max-minutes", f"{budget_s / 60.0:.6f}"]
        return cmd

    def start(self, name: str) -> Slice:
        index = len(self.state[name]["slices"])
        # Each slice aims at its share of the budget so far, so an overshoot is taken from the next one.
        target = self.budget_s * (index + 1) / self.args.slices - self.used(name)
        sl = Slice(name, index, max(target, 1.0))
        run = self.run_dir(name)
        self.arm_dir(name).mkdir(parents=True, exist_ok=True)
        try:
            sl.log_offset = (run / "log.jsonl").stat().st_size
        except FileNotFoundError:
            sl.log_offset = 0
        out = open(self.arm_dir(name) / f"slice_{index}.log", "w")  # noqa: SIM115 -- closed when the slice ends
        env = {**os.environ, "OMP_NUM_THREADS": str(self.args.threads)}
        sl.proc = subprocess.Popen(self.command(name, sl.budget_s), stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
        sl.proc.stdout_file = out  # type: ignore[attr-defined]
        sl.wall_started = time.monotonic()
        return sl

    def clock(self, sl: Slice) -> float | None:
        """Wall seconds, or the process's CPU seconds per thread (one thread's worth of work)."""
        if self.args.clock == "wall":
            return time.monotonic()
        cpu = cpu_seconds(sl.proc.pid)
        if cpu is not None:
            self._last_cpu[sl.arm] = cpu / self.args.threads
        return self._last_cpu.get(sl.arm)

    def poll(self, sl: Slice) -> bool:
        """Advance one slice; True when its process has ended (and its record is kept)."""
        run = self.run_dir(sl.arm)
        new, sl.log_offset = read_new_records(run / "log.jsonl", sl.log_offset)
        sl.records += new
        if sl.loop_started is None and any(r.get("event") in ("start", "resume") for r in new):
            sl.loop_started = self.clock(sl)
        now = self.clock(sl)  # read before the exit check below: an exited process has no CPU time to read
        if (self.args.clock == "cpu" and not sl.stop_sent and sl.loop_started is not None and now is not None
                and now - sl.loop_started >= sl.budget_s):
            sl.proc.send_signal(signal.SIGINT)  # the loop stops after this iteration and saves latest
            sl.stop_sent = True
        code = sl.proc.poll()
        if code is None:
            if time.monotonic() - sl.wall_started > self.args.slice_timeout:
                os.killpg(sl.proc.pid, signal.SIGKILL)
            return False
        sl.proc.stdout_file.close()  # type: ignore[attr-defined]
        new, sl.log_offset = read_new_records(run / "log.jsonl", sl.log_offset)
        sl.records += new
        self._finish(sl, code)
        return True

    def _finish(self, sl: Slice, code: int) -> None:
        start = next((r for r in sl.records if r.get("event") in ("start", "resume")), None)
        stop = next((r for r in reversed(sl.records) if r.get("event") == "stop"), None)
        ok = code in (0, 130) and stop is not None and stop.get("status") in ("time_limit", "interrupted",
                                                                                "finished", "max_steps")
        if self.args.clock == "wall":
            used = (stop["time"] - start["time"]) if ok and start else 0.0
        else:
            used = (self._last_cpu.get(sl.arm, 0.0) - sl.loop_started) if sl.loop_started is not None else 0.0
            used = used if ok else 0.0
        record = {"index": sl.index, "budget_s": sl.budget_s, "used_s": round(max(used, 0.0), 3),
                  "wall_s": round(time.monotonic() - sl.wall_started, 3), "exit": code,
                  "status": stop.get("status") if stop else None, "step": stop.get("step") if stop else None}
        if not ok:
            tail = (self.arm_dir(sl.arm) / f"slice_{sl.index}.log").read_text(errors="replace")
            lines = tail.strip().splitlines() or ["no output"]
            record["error"] = lines[-1][:300]
            self.state[sl.arm]["failed"] = record["error"]
        self.state[sl.arm]["slices"].append(record)
        write_json_atomic(self.arm_dir(sl.arm) / STATE, self.state[sl.arm])
        self.log(f"{sl.arm}: slice {sl.index + 1}/{self.args.slices} {record['status'] or 'failed'} at step "
                 f"{record['step']}, {record['used_s']:.0f} of {sl.budget_s:.0f} {self.args.clock}-s"
                 + (f" ({record['error']})" if not ok else ""))

    def train_all(self) -> None:
        """Round-robin over the arms, ``--jobs`` slices at a time, until every arm used its budget."""
        most = max(self.slices_left(n) for n in self.arms)
        order = [n for k in range(most) for n in self.arms if self.slices_left(n) > k]
        running: dict[str, Slice] = {}
        while order or running:
            for name in list(order):
                if len(running) >= self.args.jobs:
                    break
                if self.state[name].get("failed"):
                    order.remove(name)
                elif name not in running:  # an arm's next slice waits for its previous one
                    order.remove(name)
                    running[name] = self.start(name)
            time.sleep(self.args.poll)
            for name, sl in list(running.items()):
                if self.poll(sl):
                    del running[name]

    def evaluate(self, name: str) -> dict:
        """``cyclegan evaluate --no-inception --classifier`` on the arm's latest checkpoint."""
        run = self.run_dir(name)
        out = self.arm_dir(name) / EVAL
        if not self.args.rescore and out.is_file() and \
                out.stat().st_mtime >= (self.arm_dir(name) / STATE).stat().st_mtime:
            return json.loads(out.read_text())
        cmd = ["evaluate", "--checkpoint", str(run), "--no-inception", "--classifier", "--out", str(out),
               "--device", self.args.device, "--quiet",
               "--classifier-min-accuracy", str(self.args.classifier_min_accuracy)]
        if self.args.eval_size:
            cmd += ["--image-size", str(self.args.eval_size)]
        env_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(self.args.threads)  # one evaluation at a time, as one arm trains
        try:
            result = harness.run_cli(cmd, timeout=self.args.slice_timeout)
        finally:
            if env_threads is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = env_threads
        if not result["ok"]:
            return {"error": result["reason"]}
        return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------- report


def row_of(name: str, arm: Arm, state: dict, scores: dict, batch: int) -> dict:
    slices = state["slices"]
    steps = slices[-1]["step"] if slices and slices[-1]["step"] is not None else None
    used = sum(s["used_s"] for s in slices)
    row = {"arm": name, "what": arm.what, "preset": arm.preset, "sets": arm.sets, "slices": slices,
           "budget_used_s": round(used, 1), "iterations": steps,
           "img_per_s": (steps * batch / used) if steps and used else None,
           "status": "ok", "reason": None}
    if state.get("failed") or "error" in scores:
        row.update(status="skipped", reason=state.get("failed") or scores.get("error"))
        return row
    for direction in ("a2b", "b2a"):
        d = scores.get(direction, {})
        for key in ("target_share", "target_share_real", "classifier_fd", "cycle_l1"):
            row[f"{key}_{direction}"] = d.get(key)
    row["classifier"] = {k: scores["classifier"].get(k) for k in ("key", "size", "held_out_accuracy")} \
        if scores.get("classifier") else None
    return row


def pct(x: float | None) -> str:
    return fmt(None if x is None else 100.0 * x, ".1f")


def goal_lines(results: list[dict], goal_arm: str | None) -> list[str]:
    ref = results[0]
    fast = next((r for r in results if r["arm"] == goal_arm), None) if goal_arm else None
    if fast is None or fast["status"] != "ok" or ref["status"] != "ok":
        return []
    share, ref_share = fast["target_share_a2b"], ref["target_share_a2b"]
    tenfold = ref_share is not None and share is not None and share >= 10 * ref_share
    ok_a2b = tenfold and share > 0.30
    b2a, ref_b2a = fast.get("target_share_b2a"), ref.get("target_share_b2a")
    ok_b2a = b2a is not None and ref_b2a is not None and b2a >= ref_b2a
    line = (f"goal ({goal_arm}): A->B {pct(share)}% vs paper {pct(ref_share)}% "
            f"({fmt_ratio(harness.ratio(share, ref_share))}; needs >= 10x and > 30%): "
            f"{'met' if ok_a2b else 'not met'}; B->A {pct(b2a)}% vs {pct(ref_b2a)}%: "
            f"{'no worse' if ok_b2a else 'worse'}")
    return [line]


def resolve_race_defaults(args: argparse.Namespace, *, minutes: float) -> None:
    """Fill the race flags left unset (device, budget, slices, size, clock, loader workers, slice
    timeout) in place; ``minutes`` is the script's default budget per arm."""
    args.device = harness.resolve_device(args.device)
    args.minutes = args.minutes if args.minutes is not None else minutes
    args.slices = args.slices or (2 if args.tiny else 4)
    args.size = args.size or (32 if args.tiny else 64)
    args.clock = args.clock or ("cpu" if args.device == "cpu" and Path("/proc/self/stat").exists()
                                else "wall")
    if args.num_workers is None:
        args.num_workers = 0 if args.device == "cpu" else 4
    args.slice_timeout = args.slice_timeout or max(600.0, 20 * 60 * args.minutes / args.slices)


def main(argv=None) -> int:
    p = harness.make_parser("quality_race", __doc__)
    p.add_argument("--arms", default=None, help="comma-separated arm names (see --list-arms); the reference "
                   "'paper' always runs first")
    p.add_argument("--arm", action="append", default=[], metavar="NAME[@PRESET]:KEY=VALUE;...",
                   help="an extra arm: config keys on the paper preset (or PRESET), e.g. "
                   "'mine:loss.lambda_id=0;train.precision=bf16' (repeatable)")
    p.add_argument("--list-arms", action="store_true")
    p.add_argument("--dataroot", type=Path, default=harness.DEFAULT_DATA)
    p.add_argument("--minutes", type=float, default=None, help="budget per arm (default 20; --tiny 0.05)")
    p.add_argument("--slices", type=int, default=None, help="slices per arm, taken round-robin (default 4)")
    p.add_argument("--clock", choices=("cpu", "wall"), default=None,
                   help="cpu: the training process's CPU time / --threads (default on CPU); wall: wall time")
    p.add_argument("--size", type=int, default=None, help="crop size (default 64; --tiny 32)")
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--n-blocks", type=int, default=6)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=3, help="PatchGAN layers (3: 70x70)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    p.add_argument("--jobs", type=int, default=1, help="arms training at the same time")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default 0 CPU, 4 GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-size", type=int, default=None,
                   help="evaluate at this size (default: the crop size)")
    p.add_argument("--classifier-min-accuracy", type=float, default=0.8)
    p.add_argument("--goal-arm", default="fast", help="arm checked against the issue's goal (if raced)")
    p.add_argument("--runs", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between checks of the running slices")
    p.add_argument("--slice-timeout", type=float, default=None, help="seconds before a slice is killed")
    p.add_argument("--rescore", action="store_true", help="evaluate again arms already scored in --runs "
                   "(e.g. after a change to the classifier)")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run on synthetic data (tests)")
    args = p.parse_args(argv)
    if args.list_arms:
        for name, arm in ARMS.items():
            sets = " ".join(f"--set {k}={v}" for k, v in arm.sets.items())
            print(f"{name:<9} {arm.what}\n{'':<9} --preset {arm.preset} {sets}".rstrip())
        return 0
    harness.check_minimums(p, args, {"size": 8, "slices": 1, "threads": 1, "jobs": 1, "num_workers": 0,
                                     "ngf": 1, "n_blocks": 0, "ndf": 1, "n_layers": 1, "log_every": 1})
    tiny = args.tiny
    resolve_race_defaults(args, minutes=0.05 if tiny else 20.0)
    if tiny:
        args.ngf, args.n_blocks, args.ndf, args.n_layers, args.log_every = 8, 1, 8, 2, 5
        args.eval_size = args.eval_size or 16
        args.classifier_min_accuracy = 0.0
    names = harness.split_list(args.arms) if args.arms else list(TINY_ARMS if tiny else ("paper", "bf16"))
    arms = dict(parse_arm(t) for t in ["paper", *names, *args.arm])  # the reference first, once
    hw = harness.hardware_info(args.device, threads=args.threads)
    log = harness.Progress()
    log(harness.hardware_line(hw))
    with tempfile.TemporaryDirectory(prefix="quality_race_") as tmp:
        if tiny:
            # Few images: the classifier's 900 steps cost per image. The same set as gpu_suite.py
            # --dry-run's and at the same --eval-size, so one test session trains one classifier (cached).
            args.dataroot = make_unpaired_dataset(Path(tmp) / "data", n_train=2, n_test=4, size=32, seed=0)
        if not (args.dataroot / "trainA").is_dir():
            p.error(f"{args.dataroot}: no trainA/ folder; pass --dataroot")
        runs = args.runs or Path(tmp) / "runs"
        race = Race(args, arms, runs, log)
        log(f"{len(arms)} arms x {args.minutes:g} min ({args.clock} clock) in {args.slices} slices, "
            f"{args.jobs} at a time, {args.threads} thread(s) each; runs in {runs}")
        race.train_all()
        results = []
        for name, arm in arms.items():
            scores = race.evaluate(name) if not race.state[name].get("failed") else {}
            batch = int(arm.sets.get("train.batch_size", 1))
            results.append(row_of(name, arm, race.state[name], scores, batch))
            r = results[-1]
            log(f"{name}: {r['iterations']} iterations, A->B {pct(r.get('target_share_a2b'))}%, "
                f"B->A {pct(r.get('target_share_b2a'))}%")
    ref = results[0]
    for r in results:
        r["ratio"] = harness.ratio(r.get("target_share_a2b"), ref.get("target_share_a2b"))
    head = ["arm", "iterations", "img/s", "A->B share %", "x ref", "B->A share %", "FD A->B", "FD B->A",
            "cycle L1 A", "changes"]
    rows = [[r["arm"] + (" (reference)" if r is ref else ""), fmt(r["iterations"], "d"),
             fmt(r["img_per_s"], ".2f"), pct(r.get("target_share_a2b")), fmt_ratio(r["ratio"]),
             pct(r.get("target_share_b2a")), fmt(r.get("classifier_fd_a2b"), ".1f"),
             fmt(r.get("classifier_fd_b2a"), ".1f"), fmt(r.get("cycle_l1_a2b"), ".3f"),
             r["what"] if r["status"] == "ok" else f"skipped: {r['reason']}"] for r in results]
    clock = "CPU time of the training process / threads" if args.clock == "cpu" else "wall time"
    print(f"Same budget: {args.minutes:g} min of training per arm ({clock}), {args.size}x{args.size}, "
          f"ResNet-{args.n_blocks} ngf {args.ngf}, PatchGAN ndf {args.ndf} n_layers {args.n_layers}, "
          f"{args.threads} thread(s), device {args.device}, data "
          f"{args.dataroot.name}\n{harness.hardware_line(hw)}")
    print(harness.format_table(head, rows, right={1, 2, 3, 4, 5, 6, 7, 8}, markdown=args.markdown))
    cls = next((r["classifier"] for r in results if r.get("classifier")), None)
    if cls:
        real = next(r for r in results if r.get("classifier"))
        print(f"share % = translations the domain classifier assigns to the target domain (real test images: "
              f"B {pct(real['target_share_real_a2b'])}%, A {pct(real.get('target_share_real_b2a'))}%); "
              f"classifier {cls['key']}, held-out accuracy {pct(cls['held_out_accuracy'])}%; img/s per "
              f"{'CPU-second' if args.clock == 'cpu' else 'second'}")
    for line in goal_lines(results, args.goal_arm):
        print(line)
    config = {k: (str(v) if isinstance(v,
                                       Path) else v) for k, v in vars(args).items() if not k.startswith("_")}
    hw["loadavg_end"] = harness.loadavg()
    harness.write_results(args.out, benchmark="quality_race", hardware=hw, config=config, results=results,
                          total_wall_s=log.elapsed)
    log(f"wrote {args.out}")
    return 0 if ref["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
