"""What a run records between iterations: the loss window and its log records, checkpoints
(``latest``, ``epoch_NNNN``, ``best``), evaluations, sample grids, the stop record, and the
divergence check that keeps non-finite weights out of every checkpoint.

``train`` (``training.loop``) owns the order of things; ``RunRecorder`` holds the state those
records share, so the loop reads top to bottom as a list of phases.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cyclegan import checkpoint as ckpt_io
from cyclegan import distributed as dist_env
from cyclegan.config import Config
from cyclegan.distributed import DistInfo
from cyclegan.errors import (
    CycleGANError,
    RunDirError,
    TrainingDivergedError,
    add_followup,
    plain_reason,
)
from cyclegan.evaluate import TrainingEvaluator, is_improvement
from cyclegan.training.log import JsonlLog
from cyclegan.training.samples import sample_grid, save_sample
from cyclegan.training.state import training_state
from cyclegan.training.step import TrainStep


@dataclass
class Position:
    """Where a run is: ``step`` iterations done in all, in the 1-based ``epoch``, ``epoch_step`` of
    them in that epoch (each iteration is one global batch). Saved in meta.json and state.pt."""

    step: int = 0
    epoch: int = 1
    epoch_step: int = 0


class RunRecorder:
    """The records of one process of a run; only the main process writes files, every process takes
    part in the collective reads (log windows, snapshot checks).

    Losses are summed on the device every iteration and read back once per ``log_every``
    iterations (``flush_log``), the only host sync of the loop.
    """

    def __init__(
        self,
        *,
        cfg: Config,
        out: Path,
        step_fn: TrainStep,
        pos: Position,
        info: DistInfo,
        log: JsonlLog | None,  # None on every process but the main one
        evaluator: TrainingEvaluator | None,
        best: float | None,  # the best selection value so far (resumed from metrics.jsonl)
        fixed: dict[str, Tensor],  # the sample-grid images
        bar,  # tqdm progress bar, or None
        resume: bool,
        echo: Callable[[str], None],
    ):
        self.cfg, self.out, self.step_fn, self.pos, self.info = cfg, out, step_fn, pos, info
        self.main = info.is_main
        (self.log, self.evaluator, self.best, self.fixed, self.bar,
         self.echo) = log, evaluator, best, fixed, bar, echo
        self.writer = ckpt_io.CheckpointWriter(background=cfg.train.async_checkpoint)
        # Step of the newest checkpoints/latest written (or found on resume): what a divergence keeps.
        self.latest_step = ckpt_io.checkpoint_step(out / "checkpoints" / "latest") if resume else None
        # -- the loss window: losses summed on device, read back once per log_every iterations
        self.sums: dict[str, Tensor] = {}
        # iterations each loss was reported in: the generator's terms are absent from the iterations of
        # train.d_warmup_steps, so a window that straddles its end averages each over its own count
        self.counts: dict[str, int] = {}
        self.window_steps, self.window_start, self.data_time = 0, time.perf_counter(), 0.0
        self.last_log: dict = {}
        # time.monotonic() at which --max-minutes ends this invocation, None without: the progress
        # bar shows what is left of it beside tqdm's own estimate for the iterations
        self.deadline: float | None = None

    # ------------------------------------------------------------------------------ loss window

    def add(self, losses: dict[str, Tensor]) -> None:
        """Add one iteration's losses to the window (on the device: no host sync)."""
        for k, v in losses.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.window_steps += 1
        if self.bar is not None:
            self.bar.update(1)

    def flush_log(self) -> None:
        """Average the window over its iterations and all processes, check it, write it to the log."""
        if not self.window_steps:
            return
        pos, tcfg, info = self.pos, self.cfg.train, self.info
        names = list(self.sums)
        means = dist_env.mean_over_processes(torch.stack([self.sums[k] for k in names]).float(), info)
        values = means.div(torch.tensor([float(self.counts[k]) for k in names], device=means.device)).tolist()
        self.check_finite(dict(zip(names, values)), first=pos.step - self.window_steps + 1, last=pos.step)
        elapsed = time.perf_counter() - self.window_start
        record = {"step": pos.step, "epoch": pos.epoch, **dict(zip(names, values)),
                  "lr": self.step_fn.opt_g.param_groups[0]["lr"],
                  "img_per_s": self.window_steps * tcfg.batch_size * info.world_size / max(elapsed, 1e-9),
                  # share of wall time spent waiting for data: > 0.1 means the loader is the bottleneck
                  "data_time_share": min(1.0, self.data_time / max(elapsed, 1e-9))}
        self.event(record)
        self.last_log = record
        if self.bar is not None:
            postfix = ({k: f"{record[k]:.3f}" for k in ("G_total", "D_A", "D_B") if k in record}
                       | {"img/s": f"{record['img_per_s']:.1f}"})
            if self.deadline is not None:
                left = max(0, int(self.deadline - time.monotonic()))
                postfix["budget left"] = f"{left // 60}:{left % 60:02d}"
            self.bar.set_postfix(postfix, refresh=False)
        self.sums, self.counts, self.window_steps = {}, {}, 0
        self.window_start, self.data_time = time.perf_counter(), 0.0

    def check_finite(self, values: dict[str, float], *, first: int, last: int) -> None:
        """Stop when a loss of the window of steps first..last is NaN or infinite: the weights are
        broken from then on, and saving them would replace the last good checkpoint."""
        bad = [f"{k} {v}" for k, v in values.items() if not math.isfinite(v)]
        if not bad:
            return
        kept = (f"checkpoints/latest holds step {self.latest_step}" if self.latest_step is not None
                else "no checkpoint was written yet")
        raise TrainingDivergedError(
            f"training diverged: loss {', '.join(bad[:4])} over steps {first}-{last}; stopped without saving "
            f"these weights ({kept}); try a lower --lr or --precision fp32"
        )

    # ------------------------------------------------------------------------------ checkpoints

    def snapshot(self, name: str, *, collective: bool = True) -> None:
        """Save checkpoints/<name> of the weights now (with the training state for ``latest``)."""
        pos, sums = self.pos, self.sums
        # Never save weights from a window whose losses are not finite (one host read per save,
        # which copies the weights to the host anyway); all processes take part unless only the
        # main process saves (``best``).
        if sums:
            names = list(sums)
            stacked = torch.stack([sums[k] for k in names]).float()
            values = (dist_env.mean_over_processes(stacked, self.info) if collective else stacked).tolist()
            self.check_finite(dict(zip(names, values)), first=pos.step - self.window_steps + 1, last=pos.step)
        if name == "latest":
            self.latest_step = pos.step
        if self.main:
            # Resume needs the training state only in latest; epoch and best snapshots are for
            # translating and comparing, about a quarter of the size without it (docs/training.md, "The run
            # directory").
            with_state = name == "latest" or self.cfg.train.epoch_checkpoint_state
            self.writer.save(
                self.out / "checkpoints" / name,
                config=self.cfg,
                networks=self.step_fn.checkpoint_networks(),
                state=training_state(self.step_fn, global_step=pos.step, epoch=pos.epoch,
                                     epoch_step=pos.epoch_step)
                if with_state else None,
                meta={"step": pos.step, "epoch": pos.epoch, "epoch_step": pos.epoch_step},
            )

    def prune_epoch_checkpoints(self) -> None:
        keep = self.cfg.train.keep_epochs
        if self.main and keep:
            self.writer.wait()  # the newest epoch checkpoint must be on disk to count
            old = sorted((self.out / "checkpoints").glob("epoch_[0-9]*"))[:-keep]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)

    # ------------------------------------------------------------------- evaluation, samples, events

    def evaluate(self, finished_epoch: int) -> None:
        """Score the generators on the validation images (main process); a new best is saved as ``best``."""
        if self.evaluator is None:
            return
        record = self.evaluator(self.step_fn.eval_generators(), step=self.pos.step, epoch=finished_epoch)
        self.log.write({"event": "eval", **record})
        metrics = self.out / "metrics.jsonl"
        try:
            with open(metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise RunDirError(f"{metrics}: could not write ({plain_reason(e)})") from None
        if is_improvement(record, self.best):
            self.best = record["selection_value"]
            self.snapshot("best", collective=False)

    def save_samples(self, filename: str) -> None:
        """samples/<filename>: the sample grid of the fixed images (main process)."""
        if self.main:
            save_sample(sample_grid(self.step_fn, self.fixed), self.out / "samples" / filename)

    def event(self, record: dict) -> None:
        """One record in log.jsonl (main process)."""
        if self.main:
            self.log.write(record)

    # ------------------------------------------------------------------------------------ closing

    def finish(self, status: str, error: BaseException | None) -> None:
        """Close the run: the progress bar, pending checkpoint writes, the stop record, the process
        group. The first error is the one reported; anything failing while closing the run (a
        pending checkpoint write, the stop record on a full disk) is reported after it, never in its
        place. A failed checkpoint write with no error before it is raised here."""
        if self.bar is not None:
            self.bar.close()  # first, so every message below starts on a line of its own
        problems: list[str] = []
        failed = self.writer.close(raise_errors=False)
        raise_failed = failed is not None and error is None
        if raise_failed:
            status, error = "aborted", failed
        elif failed is not None:
            problems.append(str(failed))
        log = self.log
        if log is not None:
            try:
                log.write({"event": "stop", "status": status, "step": self.pos.step, "time": time.time()})
            except RunDirError as e:
                problems.append(f"{e} (the stop record is missing)")
            except OSError as e:
                problems.append(f"{log.path}: could not write the stop record ({plain_reason(e)})")
            try:
                log.close()
            except (RunDirError, OSError) as e:
                problems.append(str(e) if isinstance(e, RunDirError) else f"{log.path}: {plain_reason(e)}")
        dist_env.shutdown(self.info, clean=error is None)
        for line in problems if self.main else ():
            if isinstance(error, (CycleGANError, KeyboardInterrupt)):
                add_followup(error, line)  # the CLI prints it after the error's own line
            else:  # no error (finished, stop record lost) or a bug whose traceback follows
                self.echo(f"warning: {line}")
        if raise_failed:
            raise failed
