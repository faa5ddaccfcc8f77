"""The training loop: ``train`` runs a whole run into its run directory, in named phases.

Per iteration the step of ``model.kind`` runs (``training.step``, ``training.cut``); between
iterations: logging (every ``log_every``; the only host sync), ``latest`` snapshots (every
``save_latest_every``), and at epoch ends the sample grid, LR update, epoch checkpoint and
evaluation.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from cyclegan import checkpoint as ckpt_io
from cyclegan import distributed as dist_env
from cyclegan.config import Config
from cyclegan.data import (
    UnpairedImages,
    UnpairedSampler,
    gather_training_files,
    make_loader,
    small_image_warning,
    split_validation,
)
from cyclegan.devices import apply_threads, precision_warning, resolve_device
from cyclegan.distributed import DistInfo
from cyclegan.errors import (
    CorruptCheckpointError,
    CycleGANError,
    DataError,
    RunDirError,
    TrainingDivergedError,
    add_followup,
    plain_reason,
)
from cyclegan.evaluate import TrainingEvaluator, best_from_metrics_log, is_improvement
from cyclegan.fileio import write_text_atomic
from cyclegan.schedules import learning_rate
from cyclegan.training.log import JsonlLog
from cyclegan.training.rundir import check_resume_compatible, check_run_dir, prepare_run_dir
from cyclegan.training.samples import sample_grid, save_sample
from cyclegan.training.signals import StopFlag, ignore_stop_signals
from cyclegan.training.state import restore_training_state, training_state
from cyclegan.training.step import build_train_step


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    status: str  # "finished" | "max_steps" | "time_limit" | "interrupted" | "aborted" | "diverged" (stop record)
    last_log: dict = field(default_factory=dict)
    # "interrupted": the signal that asked for the stop (SIGINT or SIGTERM; SIGINT when another
    # process of a torchrun job received it); the CLI exits 128 + this number
    stop_signal: int | None = None


def train(
    cfg: Config,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> TrainResult:
    """Train (or resume) a CycleGAN into run directory ``out``. See the module docstring.

    Under ``torchrun`` every process runs this function on its shard of each batch; only rank 0
    writes the run directory (log, samples, checkpoints, metrics).
    """
    out = Path(out)
    tcfg = cfg.train
    info = dist_env.from_environment()
    main = info.is_main
    # Refuse first, then check device and data, and only then clear an old run (--overwrite) or
    # create the directory: a typo in --dataroot must not cost the user their previous run.
    check_run_dir(out, resume=resume, overwrite=overwrite)
    if tcfg.init_from and not resume:  # a wrong --init-from must fail before --overwrite clears a run
        ckpt_io.resolve_checkpoint(tcfg.init_from)
    device = resolve_device(tcfg.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    apply_threads(tcfg.num_threads)  # 0: PyTorch's default, capped at the CPUs a container grants

    # -- data: every file is checked before any training work
    files = gather_training_files(cfg.data, batch_size=tcfg.batch_size)
    val_a = val_b = None
    if cfg.data.val_fraction:
        files.a, val_a = split_validation(files.a, cfg.data.val_fraction, seed=tcfg.seed)
        files.b, val_b = split_validation(files.b, cfg.data.val_fraction, seed=tcfg.seed)
    # Every refusal comes before prepare_run_dir, which may clear an old run (--overwrite).
    sampler = UnpairedSampler(n_a=len(files.a), n_b=len(files.b), seed=tcfg.seed, rank=info.rank,
                              world_size=info.world_size, batch_size=tcfg.batch_size)
    steps_per_epoch = sampler.epoch_size // (tcfg.batch_size * info.world_size)
    if min(len(files.a), len(files.b)) == 0 or steps_per_epoch == 0:
        raise DataError(
            f"too few training images ({len(files.a)} A, {len(files.b)} B after data.val_fraction "
            f"{cfg.data.val_fraction}) for a global batch of {tcfg.batch_size * info.world_size}"
        )
    dist_env.init(info, device)
    if main:
        prepare_run_dir(out, resume=resume, overwrite=overwrite)
        if files.skipped:
            names = "; ".join(f"{p} ({why})" for p, why in files.skipped)
            echo(f"warning: skipped {len(files.skipped)} unreadable image(s): {names}")
        if (slow := precision_warning(device, tcfg.precision)) is not None:
            echo(f"warning: {slow}")
        if not resume and (small := small_image_warning(files, cfg.data)) is not None:
            echo(f"warning: {small}")
    dist_env.barrier(info)
    dataset = UnpairedImages(files.a, files.b, cfg.data)
    loader = make_loader(
        dataset,
        sampler,
        batch_size=tcfg.batch_size,
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory and device.type == "cuda",
    )
    loader.worker_init_fn = ignore_stop_signals if loader.num_workers > 0 else None

    # -- model, optimisers, state
    step_fn = build_train_step(cfg, device, warm_start_nets=not resume, dist=info)
    global_step, epoch, epoch_step = 0, 1, 0
    if resume:
        ckpt = ckpt_io.resume_checkpoint(out)
        check_resume_compatible(ckpt_io.load_checkpoint_config(ckpt), cfg, ckpt)
        try:
            state = restore_training_state(step_fn, ckpt)
        except CorruptCheckpointError as e:
            # A save killed after renaming the new version in leaves the previous one beside it.
            if (prev := ckpt_io.previous_version(ckpt)) is None:
                raise
            if main:
                echo(f"warning: {e}; resuming from {prev} instead")
            ckpt = prev
            check_resume_compatible(ckpt_io.load_checkpoint_config(ckpt), cfg, ckpt)
            state = restore_training_state(step_fn, ckpt)
        global_step, epoch, epoch_step = state["step"], state["epoch"], state["epoch_step"]
        if main:
            echo(f"resuming from {ckpt.relative_to(out)} (step {global_step})")

    # -- evaluation (--eval-every): built once, so real-image features are computed once
    evaluator, best = None, None
    if tcfg.eval_every and main:
        evaluator = TrainingEvaluator(cfg, device=device, files_a=val_a, files_b=val_b,
                                      inception_weights=tcfg.inception_weights)
        echo(f"eval: {evaluator.note}")
        if resume:
            best = best_from_metrics_log(out / "metrics.jsonl", metric=evaluator.selection_metric)

    log = None
    if main:
        write_text_atomic(out / "config.json", cfg.to_json())
        (out / "samples").mkdir(exist_ok=True)
        log = JsonlLog(out / "log.jsonl", out / "tensorboard" if tcfg.tensorboard else None)
        log.write({"event": "resume" if resume else "start", "step": global_step, "epoch": epoch,
                   "device": str(device), "world_size": info.world_size, "images_a": len(files.a),
                   "images_b": len(files.b), "time": time.time()})
        if evaluator is not None:
            log.write({"event": "eval_setup", **evaluator.describe()})
    fixed = dataset.fixed_batch(cfg.data.n_samples)
    if main and not resume:
        save_sample(sample_grid(step_fn, fixed), out / "samples" / "epoch_0000.png")

    writer = ckpt_io.CheckpointWriter(background=tcfg.async_checkpoint)

    # Step of the newest checkpoints/latest written (or found on resume): what a divergence keeps.
    latest_step = ckpt_io.checkpoint_step(out / "checkpoints" / "latest") if resume else None

    def snapshot(name: str, *, collective: bool = True) -> None:
        nonlocal latest_step
        # Never save weights from a window whose losses are not finite (one host read per save,
        # which copies the weights to the host anyway); all processes take part unless only the
        # main process saves (``best``).
        if sums:
            names = list(sums)
            stacked = torch.stack([sums[k] for k in names]).float()
            values = (dist_env.mean_over_processes(stacked, info) if collective else stacked).tolist()
            check_finite(dict(zip(names, values)), first=global_step - window_steps + 1, last=global_step)
        if name == "latest":
            latest_step = global_step
        if main:
            # Resume needs the training state only in latest; epoch and best snapshots are for
            # translating and comparing, about a quarter of the size without it (README, "The run directory").
            with_state = name == "latest" or tcfg.epoch_checkpoint_state
            writer.save(
                out / "checkpoints" / name,
                config=cfg,
                networks=step_fn.checkpoint_networks(),
                state=training_state(step_fn, global_step=global_step, epoch=epoch, epoch_step=epoch_step)
                if with_state else None,
                meta={"step": global_step, "epoch": epoch, "epoch_step": epoch_step},
            )

    def prune_epoch_checkpoints() -> None:
        if main and tcfg.keep_epochs:
            writer.wait()  # the newest epoch checkpoint must be on disk to count
            old = sorted((out / "checkpoints").glob("epoch_[0-9]*"))[: -tcfg.keep_epochs]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)

    def evaluate(finished_epoch: int) -> None:
        nonlocal best
        if evaluator is None:
            return
        record = evaluator(step_fn.eval_generators(), step=global_step, epoch=finished_epoch)
        log.write({"event": "eval", **record})
        try:
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise RunDirError(f"{out / 'metrics.jsonl'}: could not write ({plain_reason(e)})") from None
        if is_improvement(record, best):
            best = record["selection_value"]
            snapshot("best", collective=False)

    def check_finite(values: dict[str, float], *, first: int, last: int) -> None:
        """Stop when a loss of the window of steps first..last is NaN or infinite: the weights are
        broken from then on, and saving them would replace the last good checkpoint."""
        bad = [f"{k} {v}" for k, v in values.items() if not math.isfinite(v)]
        if not bad:
            return
        kept = (f"checkpoints/latest holds step {latest_step}" if latest_step is not None
                else "no checkpoint was written yet")
        raise TrainingDivergedError(
            f"training diverged: loss {', '.join(bad[:4])} over steps {first}-{last}; stopped without saving "
            f"these weights ({kept}); try a lower --lr or --precision fp32"
        )

    # -- logging state: losses summed on device, read back once per log_every iterations
    sums: dict[str, Tensor] = {}
    window_steps, window_start, data_time = 0, time.perf_counter(), 0.0
    last_log: dict = {}

    def flush_log() -> None:
        nonlocal sums, window_steps, window_start, last_log, data_time
        if not window_steps:
            return
        names = list(sums)
        means = dist_env.mean_over_processes(torch.stack([sums[k] for k in names]).float(), info)
        values = means.div(window_steps).tolist()
        check_finite(dict(zip(names, values)), first=global_step - window_steps + 1, last=global_step)
        elapsed = time.perf_counter() - window_start
        record = {"step": global_step, "epoch": epoch, **dict(zip(names, values)),
                  "lr": step_fn.opt_g.param_groups[0]["lr"],
                  "img_per_s": window_steps * tcfg.batch_size * info.world_size / max(elapsed, 1e-9),
                  # share of wall time spent waiting for data: > 0.1 means the loader is the bottleneck
                  "data_time_share": min(1.0, data_time / max(elapsed, 1e-9))}
        if main:
            log.write(record)
        last_log = record
        if bar is not None:
            bar.set_postfix({k: f"{record[k]:.3f}" for k in ("G_total", "D_A", "D_B") if k in record}
                            | {"img/s": f"{record['img_per_s']:.1f}"}, refresh=False)
        sums, window_steps, window_start, data_time = {}, 0, time.perf_counter(), 0.0

    total_steps = steps_per_epoch * tcfg.epochs
    if tcfg.max_steps:
        total_steps = min(total_steps, tcfg.max_steps)
    bar = None
    if progress and main:
        bar = tqdm(total=total_steps, initial=min(global_step, total_steps), unit="it", dynamic_ncols=True,
                   file=sys.stderr)

    status = "finished"
    if tcfg.max_steps and global_step >= tcfg.max_steps:
        status = "max_steps"  # resumed at or past the limit: nothing to do, not one step more
    started = time.monotonic()
    error: BaseException | None = None
    try:
        with StopFlag() as stop:
            while epoch <= tcfg.epochs and status == "finished":
                lr = learning_rate(cfg, epoch, world_size=info.world_size)
                for opt in (step_fn.opt_g, step_fn.opt_d):
                    for group in opt.param_groups:
                        group["lr"] = lr
                sampler.set_epoch(epoch, start=epoch_step * tcfg.batch_size)
                if epoch_step < steps_per_epoch:
                    batches = iter(loader)
                    while True:
                        # -- data: time spent waiting for the loader (host time, no device sync)
                        wait = time.perf_counter()
                        batch = next(batches, None)
                        data_time += time.perf_counter() - wait
                        if batch is None:
                            break
                        # -- generator step, pool, discriminator step
                        losses = step_fn(batch)
                        global_step += 1
                        epoch_step += 1
                        for k, v in losses.items():
                            sums[k] = sums[k] + v if k in sums else v.clone()
                        window_steps += 1
                        if bar is not None:
                            bar.update(1)
                        # -- logging
                        is_log_step = global_step % tcfg.log_every == 0
                        if is_log_step:
                            flush_log()
                        # -- snapshot
                        if global_step % tcfg.save_latest_every == 0:
                            snapshot("latest")
                        if tcfg.max_steps and global_step >= tcfg.max_steps:
                            status = "max_steps"
                        # Wall-clock budget: ranks may disagree on time, so they agree at log steps.
                        elif tcfg.max_minutes and (is_log_step or not info.enabled) and _past_budget(
                                started, tcfg.max_minutes, info, device):
                            status = "time_limit"
                        # Processes must stop at the same iteration; they agree at log steps.
                        if stop.requested if not info.enabled else (is_log_step and _any_process(stop, info, device)):
                            status = "interrupted"
                        if status != "finished":
                            break
                # -- end of epoch: samples, epoch checkpoint, evaluation
                if epoch_step >= steps_per_epoch:
                    if main and (epoch % tcfg.sample_every == 0 or epoch == tcfg.epochs):
                        save_sample(sample_grid(step_fn, fixed), out / "samples" / f"epoch_{epoch:04d}.png")
                    finished_epoch = epoch
                    epoch, epoch_step = epoch + 1, 0
                    if finished_epoch % tcfg.save_epoch_every == 0 or finished_epoch == tcfg.epochs:
                        snapshot(f"epoch_{finished_epoch:04d}")
                        prune_epoch_checkpoints()
                    if tcfg.eval_every and (finished_epoch % tcfg.eval_every == 0 or finished_epoch == tcfg.epochs):
                        evaluate(finished_epoch)
                    if main:
                        log.write({"event": "epoch_end", "epoch": finished_epoch, "step": global_step,
                                   "time": time.time()})
                    dist_env.barrier(info)
            flush_log()
            if main and status != "finished" and epoch_step:
                save_sample(sample_grid(step_fn, fixed), out / "samples" / f"step_{global_step:07d}.png")
            snapshot("latest")
            writer.wait()  # the run ends when its last checkpoint is on disk
            dist_env.barrier(info)
    except BaseException as e:
        status, error = "diverged" if isinstance(e, TrainingDivergedError) else "aborted", e
        raise
    finally:
        # The first error is the one reported; anything failing while closing the run (a pending
        # checkpoint write, the stop record on a full disk) is reported after it, never in its place.
        if bar is not None:
            bar.close()  # first, so every message below starts on a line of its own
        problems: list[str] = []
        failed = writer.close(raise_errors=False)
        raise_failed = failed is not None and error is None
        if raise_failed:
            status, error = "aborted", failed
        elif failed is not None:
            problems.append(str(failed))
        if log is not None:
            try:
                log.write({"event": "stop", "status": status, "step": global_step, "time": time.time()})
            except RunDirError as e:
                problems.append(f"{e} (the stop record is missing)")
            except OSError as e:
                problems.append(f"{log.path}: could not write the stop record ({plain_reason(e)})")
            try:
                log.close()
            except (RunDirError, OSError) as e:
                problems.append(str(e) if isinstance(e, RunDirError) else f"{log.path}: {plain_reason(e)}")
        dist_env.shutdown(info, clean=error is None)
        for line in problems if main else ():
            if isinstance(error, (CycleGANError, KeyboardInterrupt)):
                add_followup(error, line)  # the CLI prints it after the error's own line
            else:  # no error (finished, stop record lost) or a bug whose traceback follows
                echo(f"warning: {line}")
        if raise_failed:
            raise failed
    stop_signal = (stop.signum or signal.SIGINT) if status == "interrupted" else None
    return TrainResult(run_dir=out, step=global_step, epoch=epoch, status=status, last_log=last_log,
                       stop_signal=stop_signal)


def _past_budget(started: float, minutes: float, info: DistInfo, device: torch.device) -> bool:
    over = torch.tensor([1.0 if time.monotonic() - started >= 60.0 * minutes else 0.0], device=device)
    return bool(dist_env.mean_over_processes(over, info).item() > 0)


def _any_process(stop: StopFlag, info: DistInfo, device: torch.device) -> bool:
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
    return bool(dist_env.mean_over_processes(flag, info).item() > 0)
