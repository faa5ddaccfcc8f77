"""What a run will do and cost, said before it does it: the banner printed at the start of every
``train`` / ``distill`` (device, precision, recipe and what differs from it, images, iterations) and
the estimate measured on the first iterations, with what the budget buys and what would help on
this machine when the run cannot finish in it (or in a day). Nothing here changes the run: the loop
prints these lines and goes on as configured.

The content is computed by plain functions (``describe_run``, ``estimate_lines``) so it is tested
without timing anything; ``StepTimer`` is the only part that reads a clock.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cyclegan import resolution
from cyclegan.config import Config, dotted, preset_dict
from cyclegan.devices import native_bf16

# Keys shown elsewhere in the banner or that say where, not how, a run trains: left out of the
# recipe's differences.
_NOT_RECIPE = ("preset", "data.dataroot", "data.data_a", "data.data_b", "train.device", "train.precision",
               "train.max_steps", "train.max_minutes", "train.num_threads", "train.init_from",
               "distill.teacher", "distill.teacher_sha256", "train.inception_weights")
MAX_DIFFERENCES = 8  # differences listed by name; the rest are counted
DAY_SECONDS = 86_400.0
# The estimate: the first WARMUP_STEPS iterations of an invocation are not timed (allocation, kernel
# selection, torch.compile), then MEASURE_STEPS iterations and at least MEASURE_SECONDS are.
WARMUP_STEPS = 2
MEASURE_STEPS = 5
MEASURE_SECONDS = 2.0


# ------------------------------------------------------------------------------------------ precision


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """``train.precision`` as the run will use it, and why: "auto" is bf16 autocast where ``device``
    computes bf16 natively (Ampere+ GPUs; CPUs with AVX512-BF16 or AMX), else fp32; other values
    are kept."""
    if requested != "auto":
        return requested, "as configured"
    if native_bf16(device):
        return "bf16", f"auto: native bf16 on this {device.type}"
    return "fp32", f"auto: no native bf16 on this {device.type}"


# --------------------------------------------------------------------------------------------- banner


@dataclass(frozen=True)
class RunPlan:
    """What one invocation of ``train`` will do, as the banner states it."""

    kind: str  # model.kind
    device: str  # e.g. "cpu (2 threads)"
    precision: str  # the resolved train.precision
    precision_reason: str  # "as configured", "auto: native bf16 on this cpu"...
    recipe: str  # "preset fast", "defaults (the CycleGAN paper)"
    differences: tuple[str, ...]  # "data.crop_size 112 (recipe: 256)", ...
    images_a: int
    images_b: int
    steps_per_epoch: int
    epochs: int
    start_step: int  # iterations done before this invocation (0 for a new run)
    stop_step: int  # where this invocation stops at the latest (epochs or --max-steps)
    max_minutes: float  # the time budget of this invocation, 0 = none
    world_size: int = 1
    stages: tuple[resolution.Stage, ...] = ()  # train.resolution_schedule
    crop_size: int = 0  # data.crop_size: the crop after the last stage
    d_warmup_steps: int = 0  # train.d_warmup_steps: the first iterations train the discriminators only

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def steps_to_run(self) -> int:
        return max(0, self.stop_step - self.start_step)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def recipe_differences(cfg: Config) -> tuple[str, tuple[str, ...]]:
    """The recipe's name (its preset, or the defaults) and every setting of ``cfg`` that differs from
    it, as "key value (recipe: value)", where-and-budget keys left out."""
    base = Config().to_dict()
    name = "defaults (the CycleGAN paper)"
    if cfg.preset:
        base = _merge(base, preset_dict(cfg.preset))
        name = f"preset {cfg.preset}"
    ours, theirs = dotted(cfg.to_dict()), dotted(base)
    diffs = tuple(
        f"{key} {ours[key]!r} (recipe: {theirs.get(key)!r})"
        for key in ours
        if key not in _NOT_RECIPE and ours[key] != theirs.get(key)
    )
    return name, diffs


def plan_run(
    cfg: Config, *, device: torch.device, precision: str, precision_reason: str, images_a: int, images_b: int,
    steps_per_epoch: int, start_step: int, world_size: int = 1,
) -> RunPlan:
    """The ``RunPlan`` of an invocation of ``cfg`` resumed at ``start_step`` (0: a new run)."""
    tcfg = cfg.train
    total = steps_per_epoch * tcfg.epochs
    # train.max_steps is the iteration at which the run stops (the command line's --max-steps N is
    # turned into "N past where the run resumes" by training.rundir.stop_after)
    stop = min(total, tcfg.max_steps) if tcfg.max_steps else total
    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    recipe, diffs = recipe_differences(cfg)
    return RunPlan(kind=cfg.model.kind, device=f"{device}{threads}", precision=precision,
                   precision_reason=precision_reason, recipe=recipe, differences=diffs, images_a=images_a,
                   images_b=images_b, steps_per_epoch=steps_per_epoch, epochs=tcfg.epochs,
                   start_step=start_step,
                   stop_step=max(stop, start_step), max_minutes=tcfg.max_minutes, world_size=world_size,
                   stages=resolution.parse_schedule(tcfg.resolution_schedule), crop_size=cfg.data.crop_size,
                   d_warmup_steps=tcfg.d_warmup_steps)


def describe_run(plan: RunPlan) -> list[str]:
    """The banner: one block of short lines, before any training work."""
    shown = list(plan.differences[:MAX_DIFFERENCES])
    if len(plan.differences) > MAX_DIFFERENCES:
        shown.append(f"and {len(plan.differences) - MAX_DIFFERENCES} more (config.json has every setting)")
    procs = f" x {plan.world_size} processes" if plan.world_size > 1 else ""
    lines = [
        f"run: {plan.kind} on {plan.device}{procs}, precision {plan.precision} ({plan.precision_reason})",
        f"recipe: {plan.recipe}" + (", with " + "; ".join(shown) if shown else ", unchanged"),
        (f"images: {plan.images_a:,} A, {plan.images_b:,} B; {plan.steps_per_epoch:,} iterations per epoch, "
         f"{plan.epochs:,} epochs = {plan.total_steps:,} iterations"),
    ]
    start = f"from iteration {plan.start_step:,}, " if plan.start_step else ""
    if plan.stop_step < plan.total_steps:
        what = f"{plan.steps_to_run:,} iterations (--max-steps), to iteration {plan.stop_step:,}"
    else:
        what = f"{plan.steps_to_run:,} iterations, to the end of the run"
    budget = f", or {_duration(plan.max_minutes * 60)} of training (--max-minutes) if that comes first" \
        if plan.max_minutes else ""
    lines.append(f"this invocation: {start}{what}{budget}")
    if plan.start_step < plan.d_warmup_steps:
        lines.append(f"discriminator warm-up: iterations {plan.start_step:,} to {plan.d_warmup_steps:,} "
                     "train the discriminators only (train.d_warmup_steps); the estimate is measured "
                     "after them")
    if plan.stages:
        sizes = ", ".join(f"{s.size} px to iteration {s.until_step:,}" for s in plan.stages)
        lines.append(f"growing resolution: {sizes}, then {plan.crop_size} px (train.resolution_schedule)")
    return lines


# ------------------------------------------------------------------------------------------- estimate


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY_SECONDS:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY_SECONDS:.1f} days"


def estimate_lines(plan: RunPlan, seconds_per_step: float, *, cfg: Config, device: torch.device) -> list[str]:
    """The estimate measured on the first iterations and, when the run cannot finish within the
    budget (``--max-minutes``) or a day, what the budget buys and what would help here."""
    left = plan.steps_to_run
    invocation = scheduled_seconds(plan, seconds_per_step, plan.start_step, plan.stop_step)
    whole = scheduled_seconds(plan, seconds_per_step, plan.start_step, plan.total_steps)
    lines = [f"estimate: {seconds_per_step:.3g} s/iteration measured, {_duration(invocation)} for the "
             f"{left:,} iterations of this invocation" + (f" ({_duration(whole)} to the end of the run)"
                                                          if plan.stop_step < plan.total_steps else "")
             + "; epoch-end samples and checkpoints come on top"]
    if plan.stages:
        lines.append(f"  (measured on {_size_at(plan, plan.start_step)}-px crops; the larger stages of "
                     "train.resolution_schedule are estimated by pixel count)")
    budget = plan.max_minutes * 60
    over_budget = bool(budget) and invocation > budget
    if not over_budget and invocation <= DAY_SECONDS:
        return lines
    if over_budget:
        steps = steps_within(plan, seconds_per_step, budget)
        share = steps / max(1, plan.total_steps)
        if steps < 1:
            lines.append(f"budget: --max-minutes {plan.max_minutes:g} is shorter than one iteration here; "
                         "the iteration under way finishes and is saved")
        else:
            lines.append(f"budget: --max-minutes {plan.max_minutes:g} buys about {steps:,} iterations "
                         f"({steps / max(1, plan.steps_per_epoch):.2g} epochs, {share:.2%} of the run); "
                         "--resume continues from there")
    else:
        lines.append(f"this is more than a day: {_duration(invocation)} at this speed")
    lines += ["what would help on this machine (nothing is changed for you):"]
    lines += [f"  - {tip}" for tip in speedups(cfg, device, plan.precision)]
    return lines


def _size_at(plan: RunPlan, step: int) -> int:
    return resolution.size_at(plan.stages, step) or plan.crop_size


def _segments(plan: RunPlan, begin: int, end: int) -> list[tuple[int, int]]:
    """[begin, end) cut at the stage boundaries of the schedule: (first, last + 1) pieces of one size."""
    cuts = sorted({begin, end, *(s.until_step for s in plan.stages if begin < s.until_step < end)})
    return list(itertools.pairwise(cuts))


def _cost(plan: RunPlan, seconds_per_step: float, step: int) -> float:
    """Seconds of iteration ``step`` from ``seconds_per_step`` measured at ``plan.start_step``'s crop: with
    a resolution schedule an iteration costs in proportion to its pixels (the networks are
    convolutional: their work grows with the area)."""
    if not plan.stages:
        return seconds_per_step
    return seconds_per_step * (_size_at(plan, step) / _size_at(plan, plan.start_step)) ** 2


def scheduled_seconds(plan: RunPlan, seconds_per_step: float, begin: int, end: int) -> float:
    """Seconds for iterations [begin, end) (``_cost`` of each)."""
    return sum((b - a) * _cost(plan, seconds_per_step, a) for a, b in _segments(plan, begin, end))


def steps_within(plan: RunPlan, seconds_per_step: float, budget: float) -> int:
    """How many iterations from ``plan.start_step`` fit in ``budget`` seconds (``_cost`` of each)."""
    done, left = 0, budget
    for a, b in _segments(plan, plan.start_step, max(plan.total_steps, plan.start_step)):
        cost = _cost(plan, seconds_per_step, a)
        n = min(b - a, int(left / cost))
        done, left = done + n, left - n * cost
        if n < b - a:
            break
    return done


def speedups(cfg: Config, device: torch.device, precision: str) -> list[str]:
    """Changes that make iterations cheaper here, most effective first, as flags to pass."""
    tips = []
    crop = cfg.data.crop_size
    if crop > 128:
        factor = (crop / 128) ** 2
        tips.append(f"smaller crops: --load-size 143 --crop-size 128 (about {factor:.1f}x fewer pixels per "
                    f"iteration than {crop}; docs/benchmarks.md, 'Quality per minute', races at 64 and 128 "
                    "px)")
    if precision == "fp32" and native_bf16(device):
        tips.append("--precision bf16 (native on this device; the default --precision auto picks it)")
    if device.type == "cpu":
        if cfg.loss.lambda_id > 0 and cfg.model.kind == "cyclegan":
            tips.append("--preset fast (no identity loss: 1.23x the iterations per CPU-second, and it scored "
                        "higher per minute in bench/quality_race.py; add --precision fp32 where bf16 is not "
                        "native)")
        if cfg.model.generator.name == "resnet" and cfg.model.generator.n_blocks > 6:
            tips.append("--set model.generator.n_blocks=6 (the paper's generator for 128 px)")
        tips.append("a CUDA GPU (docs/benchmarks.md)")
    elif precision == "fp32" and device.type == "cuda":
        tips.append("--compile and --channels-last (docs/benchmarks.md, 'Training')")
    tips.append("fewer --epochs, or several --max-minutes slices continued with --resume")
    return tips


class StepTimer:
    """Times the iterations of one invocation after a warm-up and hands the seconds per iteration to
    ``report`` once (the loop prints ``estimate_lines`` from it). On CUDA the two reads of the clock
    wait for queued work (two syncs per run); elsewhere the loop is synchronous anyway."""

    def __init__(self, device: torch.device, report: Callable[[float], None], *, warmup: int | None = None,
                 steps: int | None = None, seconds: float | None = None, extra_warmup: int = 0):
        self.device, self.report = device, report
        # extra_warmup: iterations unlike the rest (a discriminator warm-up) are not timed either
        self.warmup = (WARMUP_STEPS if warmup is None else warmup) + extra_warmup
        self.steps = MEASURE_STEPS if steps is None else steps
        self.seconds = MEASURE_SECONDS if seconds is None else seconds
        self.done = 0
        self.began = time.perf_counter()  # before the first iteration: finish() falls back on it
        self.started: float | None = None
        self.finished = False

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def step(self) -> None:
        """One iteration done."""
        if self.finished:
            return
        self.done += 1
        if self.done == self.warmup:
            self.started = self._now()
            return
        if self.started is None or self.done < self.warmup + self.steps:
            return
        # The host clock decides when enough time has passed (no sync per iteration); the final
        # read waits for the queued work.
        if time.perf_counter() - self.started >= self.seconds or self.done >= self.warmup + 50 * self.steps:
            self.finished = True
            self.report((self._now() - self.started) / (self.done - self.warmup))

    def finish(self) -> None:
        """The invocation ends (budget, signal, end of the run) before the estimate was given: give it
        from what was timed, or from every iteration done, warm-up included, if none was timed."""
        if self.finished or self.done == 0:
            return
        self.finished = True
        if self.started is not None and self.done > self.warmup:
            self.report((self._now() - self.started) / (self.done - self.warmup))
        else:
            self.report((self._now() - self.began) / self.done)
