"""The training loop: ``train`` runs a whole run into its run directory, in named phases read top
to bottom: refusals and device, data, model and state, evaluation, run directory, the loop.

Per iteration the step of ``model.kind`` runs (``training.step``, ``training.cut``); between
iterations: logging (every ``log_every``; the only host sync), ``latest`` snapshots (every
``save_latest_every``), and at epoch ends the sample grid, LR update, epoch checkpoint and
evaluation. What those write, and the state they share, is ``training.recorder.RunRecorder``.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cyclegan import checkpoint as ckpt_io
from cyclegan import distributed as dist_env
from cyclegan import resolution
from cyclegan.config import Config, TrainConfig
from cyclegan.data import (
    DomainFiles,
    UnpairedImages,
    UnpairedSampler,
    UnpairedWithSmoothed,
    edge_smoothed_files,
    gather_training_files,
    make_loader,
    resolve_domains,
    small_image_warning,
    split_validation,
    training_scale,
    training_scale_key,
)
from cyclegan.devices import apply_threads, precision_warning, resolve_device
from cyclegan.distributed import DistInfo
from cyclegan.errors import CorruptCheckpointError, DataError, TrainingDivergedError
from cyclegan.evaluate import TrainingEvaluator, best_from_metrics_log
from cyclegan.fileio import write_text_atomic
from cyclegan.prep.edges import edge_smooth_folder
from cyclegan.schedules import learning_rate
from cyclegan.training.banner import StepTimer, describe_run, estimate_lines, plan_run, resolve_precision
from cyclegan.training.final import FINAL_DIR, held_aside_images, write_final_translations
from cyclegan.training.log import JsonlLog
from cyclegan.training.models import check_init_from
from cyclegan.training.recorder import Position, RunRecorder
from cyclegan.training.rundir import check_resume_compatible, check_run_dir, prepare_run_dir
from cyclegan.training.samples import sample_grid, save_sample
from cyclegan.training.signals import StopFlag, ignore_stop_signals
from cyclegan.training.state import restore_training_state
from cyclegan.training.step import TrainStep, build_train_step


@dataclass
class TrainResult:
    """What ``train`` returns: the run folder, where it stopped (``step``, ``epoch``), why (``status``)
    and the last logged losses."""

    run_dir: Path
    step: int
    epoch: int
    # "finished" | "max_steps" | "time_limit" | "interrupted" | "aborted" | "diverged" (the stop record's);
    # "nothing_to_do": a resumed run that had already trained all its epochs (nothing written)
    status: str
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
    """Train (or resume) a model of ``cfg.model.kind`` into run directory ``out``. See the module
    docstring.

    Under ``torchrun`` every process runs this function on its shard of each batch; only rank 0
    writes the run directory (log, samples, checkpoints, metrics).
    """
    out = Path(out)
    info = dist_env.from_environment()
    main = info.is_main

    # -- refusals and device: refuse first, then check device and data, and only then clear an old
    # run (--overwrite) or create the directory: a typo in --dataroot must not cost the user their
    # previous run.
    check_run_dir(out, resume=resume, overwrite=overwrite)
    if cfg.train.init_from and not resume:  # a wrong --init-from must fail before --overwrite clears a run
        check_init_from(cfg)
    device = _process_device(cfg.train.device, info)
    apply_threads(cfg.train.num_threads)  # 0: PyTorch's default, capped at the CPUs a container grants
    # precision "auto" becomes what this device runs well (bf16 where native, else fp32) here, once:
    # config.json records the resolved value, so a resume (on this machine or another) continues
    # the same arithmetic instead of choosing again; log.jsonl's start record keeps what was asked.
    precision_requested = cfg.train.precision
    precision, precision_reason = resolve_precision(precision_requested, device)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))
    tcfg = cfg.train

    # -- data: every file is checked before any training work
    data = _training_data(cfg, info)
    dist_env.init(info, device)
    if main:
        prepare_run_dir(out, resume=resume, overwrite=overwrite)
        _warn_about_data_and_device(data.files, cfg, device, resume=resume, echo=echo)
    dist_env.barrier(info)
    dataset = _dataset(cfg, data.files, out, info)
    loader = make_loader(
        dataset,
        data.sampler,
        batch_size=tcfg.batch_size,
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory and device.type == "cuda",
    )
    loader.worker_init_fn = ignore_stop_signals if loader.num_workers > 0 else None

    # -- model, optimisers, state
    step_fn = build_train_step(cfg, device, warm_start_nets=not resume, dist=info)
    pos = _resume(step_fn, out, cfg, echo=echo if main else None) if resume else Position()
    plan = plan_run(cfg, device=device, precision=precision, precision_reason=precision_reason,
                    images_a=len(data.files.a), images_b=len(data.files.b),
                    steps_per_epoch=data.steps_per_epoch, start_step=pos.step, world_size=info.world_size)
    if main:
        for line in describe_run(plan):
            echo(line)
    if pos.epoch > tcfg.epochs or (tcfg.max_steps and pos.step >= tcfg.max_steps):
        # resumed at the end: say so in plain words and touch nothing (no log record, no checkpoint)
        if main:
            echo(_nothing_to_do(pos, tcfg))
        dist_env.shutdown(info, clean=True)
        return TrainResult(run_dir=out, step=pos.step, epoch=pos.epoch, status="nothing_to_do")

    # -- evaluation (--eval-every): built once, so real-image features are computed once
    evaluator, best = None, None
    if tcfg.eval_every and main:
        evaluator = TrainingEvaluator(cfg, device=device, files_a=data.val_a, files_b=data.val_b,
                                      inception_weights=tcfg.inception_weights, echo=echo)
        echo(f"eval: {evaluator.note}")
        if resume:
            best = best_from_metrics_log(out / "metrics.jsonl", metric=evaluator.selection_metric)

    # -- run directory: config.json, the log's first records, the first sample grid
    log = None
    if main:
        write_text_atomic(out / "config.json", cfg.to_json())
        (out / "samples").mkdir(exist_ok=True)
        log = JsonlLog(out / "log.jsonl", out / "tensorboard" if tcfg.tensorboard else None)
        log.write({"event": "resume" if resume else "start", "step": pos.step, "epoch": pos.epoch,
                   "device": str(device), "world_size": info.world_size, "images_a": len(data.files.a),
                   "images_b": len(data.files.b), "precision": precision,
                   "precision_requested": precision_requested, "stop_step": plan.stop_step,
                   "time": time.time()})
        if evaluator is not None:
            log.write({"event": "eval_setup", **evaluator.describe()})
    fixed = dataset.fixed_batch(cfg.data.n_samples)
    if main and not resume:
        save_sample(sample_grid(step_fn, fixed), out / "samples" / "epoch_0000.png")

    bar = None
    if progress and main:  # this invocation's iterations: up to --max-steps more, else to the last epoch
        bar = tqdm(total=plan.stop_step, initial=pos.step, unit="it", dynamic_ncols=True, file=sys.stderr)
    run = RunRecorder(cfg=cfg, out=out, step_fn=step_fn, pos=pos, info=info, log=log, evaluator=evaluator,
                      best=best, fixed=fixed, bar=bar, resume=resume, echo=echo)

    def report_estimate(seconds_per_step: float) -> None:
        run.event({"event": "estimate", "step": pos.step, "seconds_per_step": seconds_per_step,
                   "seconds_left": seconds_per_step * max(0, plan.stop_step - pos.step)})
        if bar is not None:
            bar.clear()
        for line in estimate_lines(plan, seconds_per_step, cfg=cfg, device=device):
            echo(line)
        if bar is not None:
            bar.refresh()

    # iterations of a discriminator warm-up skip the generator's work: timing them would promise too much
    warmup_left = max(0, tcfg.d_warmup_steps - pos.step)
    timer = StepTimer(device, report_estimate, extra_warmup=warmup_left) if main else None

    # -- the loop
    stages = resolution.parse_schedule(tcfg.resolution_schedule)
    stop_reason: str | None = None  # why the loop stops early; None while it goes on
    started = time.monotonic()
    next_sample = started + 60.0 * tcfg.sample_every_minutes  # train.sample_every_minutes
    if tcfg.max_minutes:
        run.deadline = started + 60.0 * tcfg.max_minutes  # the progress bar shows what is left of it
    error: BaseException | None = None
    try:
        with StopFlag() as stop:
            while pos.epoch <= tcfg.epochs and stop_reason is None:
                _set_learning_rate(step_fn, learning_rate(cfg, pos.epoch, world_size=info.world_size),
                                   d_ratio=cfg.optim.d_lr_ratio)
                data.sampler.set_epoch(pos.epoch, start=pos.epoch_step * tcfg.batch_size)
                if pos.epoch_step < data.steps_per_epoch:
                    batches = iter(loader)
                    while True:
                        # -- data: time spent waiting for the loader (host time, no device sync)
                        wait = time.perf_counter()
                        batch = next(batches, None)
                        run.data_time += time.perf_counter() - wait
                        if batch is None:
                            break
                        if stages:  # growing resolution: this iteration's crops
                            batch = _at_resolution(batch, stages, step_fn, step=pos.step, seed=tcfg.seed,
                                                   run=run)
                        # -- generator step, pool, discriminator step (the step of model.kind)
                        losses = step_fn(batch, iteration=pos.step)
                        pos.step += 1
                        pos.epoch_step += 1
                        run.add(losses)
                        if timer is not None:
                            timer.step()
                        is_log_step = pos.step % tcfg.log_every == 0
                        if is_log_step:
                            run.flush_log()
                        if pos.step % tcfg.save_latest_every == 0:
                            run.snapshot("latest")
                        if tcfg.sample_every_minutes and time.monotonic() >= next_sample:
                            run.save_samples(f"step_{pos.step:07d}.png")
                            next_sample = time.monotonic() + 60.0 * tcfg.sample_every_minutes
                        stop_reason = _stop_reason(pos, tcfg, is_log_step=is_log_step, started=started,
                                                   stop=stop, info=info, device=device)
                        if stop_reason is not None:
                            break
                # -- end of epoch: samples, epoch checkpoint, evaluation
                if pos.epoch_step >= data.steps_per_epoch:
                    finished_epoch = pos.epoch
                    last = finished_epoch == tcfg.epochs
                    if finished_epoch % tcfg.sample_every == 0 or last:
                        run.save_samples(f"epoch_{finished_epoch:04d}.png")
                    pos.epoch, pos.epoch_step = finished_epoch + 1, 0
                    if finished_epoch % tcfg.save_epoch_every == 0 or last:
                        run.snapshot(f"epoch_{finished_epoch:04d}")
                        run.prune_epoch_checkpoints()
                    if tcfg.eval_every and (finished_epoch % tcfg.eval_every == 0 or last):
                        run.evaluate(finished_epoch)
                    run.event({"event": "epoch_end", "epoch": finished_epoch, "step": pos.step,
                               "time": time.time()})
                    dist_env.barrier(info)
            # -- end of the run: the estimate if the run stopped before it was given, last log
            # window, samples of a stopped epoch, latest
            if timer is not None and stop_reason is not None:
                timer.finish()
            run.flush_log()
            if stop_reason is not None and pos.epoch_step:
                run.save_samples(f"step_{pos.step:07d}.png")
            run.snapshot("latest")
            run.writer.wait()  # the run ends when its last checkpoint is on disk
            if main and data.held_aside and stop_reason in (None, "max_steps", "time_limit"):
                _final_translations(out, data.held_aside, device=device, step=pos.step, run=run, echo=echo)
            dist_env.barrier(info)
    except BaseException as e:
        stop_reason, error = "diverged" if isinstance(e, TrainingDivergedError) else "aborted", e
        raise
    finally:
        status = stop_reason or "finished"
        run.finish(status, error)
    stop_signal = (stop.signum or signal.SIGINT) if status == "interrupted" else None
    return TrainResult(run_dir=out, step=pos.step, epoch=pos.epoch, status=status, last_log=run.last_log,
                       stop_signal=stop_signal)


# ----------------------------------------------------------------------------------------------
# The phases' helpers


def _process_device(name: str, info: DistInfo) -> torch.device:
    """The device of this process: under torchrun with CUDA, the GPU of its local rank."""
    device = resolve_device(name)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


@dataclass
class _Data:
    files: DomainFiles  # the training images (validation images taken out)
    val_a: list | None  # validation images (data.val_fraction), None without
    val_b: list | None
    sampler: UnpairedSampler
    steps_per_epoch: int  # global batches per epoch
    held_aside: list  # what the run translates into final/ at its end (train.final_translations)


def _training_data(cfg: Config, info: DistInfo) -> _Data:
    """The training files (every one checked), the validation split and this process's sampler;
    refuses too few images for one global batch. Touches nothing on disk."""
    tcfg = cfg.train
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
    return _Data(files=files, val_a=val_a, val_b=val_b, sampler=sampler, steps_per_epoch=steps_per_epoch,
                 held_aside=held_aside_images(cfg, val_a))


def _warn_about_data_and_device(
    files: DomainFiles, cfg: Config, device: torch.device, *, resume: bool, echo: Callable[[str], None]
) -> None:
    if files.skipped:
        names = "; ".join(f"{p} ({why})" for p, why in files.skipped)
        echo(f"warning: skipped {len(files.skipped)} unreadable image(s): {names}")
    if (slow := precision_warning(device, cfg.train.precision)) is not None:
        echo(f"warning: {slow}")
    if not resume and (small := small_image_warning(files, cfg.data)) is not None:
        echo(f"warning: {small}")


def _resume(step_fn: TrainStep, out: Path, cfg: Config, *, echo: Callable[[str], None] | None) -> Position:
    """Restore weights and training state from the run's newest complete checkpoint (its ``.prev``
    version when the newest is corrupt); ``echo`` is None on every process but the main one."""
    ckpt = ckpt_io.resume_checkpoint(out)
    check_resume_compatible(ckpt_io.load_checkpoint_config(ckpt), cfg, ckpt)
    try:
        state = restore_training_state(step_fn, ckpt)
    except CorruptCheckpointError as e:
        # A save killed after renaming the new version in leaves the previous one beside it.
        if (prev := ckpt_io.previous_version(ckpt)) is None:
            raise
        if echo is not None:
            echo(f"warning: {e}; resuming from {prev} instead")
        ckpt = prev
        check_resume_compatible(ckpt_io.load_checkpoint_config(ckpt), cfg, ckpt)
        state = restore_training_state(step_fn, ckpt)
    pos = Position(step=state["step"], epoch=state["epoch"], epoch_step=state["epoch_step"])
    if echo is not None:
        echo(f"resuming from {ckpt.relative_to(out)} (step {pos.step})")
    return pos


def _set_learning_rate(step_fn: TrainStep, lr: float, *, d_ratio: float = 1.0) -> None:
    """G's optimiser at ``lr``, D's at ``lr`` x ``d_ratio`` (optim.d_lr_ratio, two time-scale updates)."""
    for opt, scale in ((step_fn.opt_g, 1.0), (step_fn.opt_d, d_ratio)):
        for group in opt.param_groups:
            group["lr"] = lr * scale


def _nothing_to_do(pos: Position, tcfg: TrainConfig) -> str:
    if pos.epoch > tcfg.epochs:
        return (f"nothing to do: the run has already trained all its {tcfg.epochs} epochs ({pos.step:,} "
                "iterations); to train on, resume with a larger --epochs")
    return (f"nothing to do: the run is already at iteration {pos.step:,} and train.max_steps stops it at "
            f"{tcfg.max_steps:,}; --max-steps N on the command line trains N more")


def _final_translations(out: Path, images: list, *, device: torch.device, step: int, run: RunRecorder,
                        echo: Callable[[str], None]) -> None:
    written = write_final_translations(out, images, device=device)
    run.event({"event": "final_translations", "step": step,
               "files": [str(p.relative_to(out)) for p in written]})
    echo(f"final translations of {len(written)} held-aside image(s): {out / FINAL_DIR}")


def _at_resolution(batch: dict, stages: tuple[resolution.Stage, ...], step_fn: TrainStep, *, step: int,
                   seed: int, run: RunRecorder) -> dict:
    """The batch cut to its stage's crop size (train.resolution_schedule); at a stage's first iteration
    the image pools, which hold fakes of the previous size, start again."""
    size = resolution.size_at(stages, step)
    if resolution.stage_changes(stages, step):
        for pool in step_fn.pools.values():
            pool.clear()
        run.event({"event": "resolution", "step": step, "crop_size": size})
    return batch if size is None else resolution.crop_batch(batch, size, seed=seed, step=step)


def _stop_reason(
    pos: Position, tcfg: TrainConfig, *, is_log_step: bool, started: float, stop: StopFlag, info: DistInfo,
    device: torch.device,
) -> str | None:
    """Why the run stops after this iteration (the stop record's status), or None to go on."""
    reason = None
    if tcfg.max_steps and pos.step >= tcfg.max_steps:
        reason = "max_steps"
    # Wall-clock budget: ranks may disagree on time, so they agree at log steps.
    elif tcfg.max_minutes and (is_log_step or not info.enabled) and _past_budget(
            started, tcfg.max_minutes, info, device):
        reason = "time_limit"
    # Processes must stop at the same iteration; they agree at log steps.
    if stop.requested if not info.enabled else (is_log_step and _any_process(stop, info, device)):
        reason = "interrupted"
    return reason


def _past_budget(started: float, minutes: float, info: DistInfo, device: torch.device) -> bool:
    over = torch.tensor([1.0 if time.monotonic() - started >= 60.0 * minutes else 0.0], device=device)
    return bool(dist_env.mean_over_processes(over, info).item() > 0)


def _any_process(stop: StopFlag, info: DistInfo, device: torch.device) -> bool:
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
    return bool(dist_env.mean_over_processes(flag, info).item() > 0)


def _dataset(cfg: Config, files: DomainFiles, run_dir: Path, info: DistInfo) -> UnpairedImages:
    """The training images, with the style domain's edge-smoothed copies when loss.lambda_edge_promote is on
    (made once into <run>/edge_smoothed/<domain> unless loss.edge_smooth_dir names them)."""
    loss = cfg.loss
    if loss.lambda_edge_promote <= 0:
        return UnpairedImages(files.a, files.b, cfg.data)
    folders = dict(zip("AB", resolve_domains(cfg.data)))
    smoothed = {}
    for domain in {"a": "A", "b": "B", "both": "AB"}[loss.edge_promote_direction]:
        smooth_dir = (Path(loss.edge_smooth_dir) if loss.edge_smooth_dir
                      else run_dir / "edge_smoothed" / domain)
        if not loss.edge_smooth_dir and info.rank == 0:
            edge_smooth_folder(folders[domain], smooth_dir, rescale=lambda img: training_scale(img, cfg.data),
                               rescale_key=training_scale_key(cfg.data))
        dist_env.barrier(info)
        smoothed[domain] = edge_smoothed_files(getattr(files, domain.lower()), folders[domain], smooth_dir)
    return UnpairedWithSmoothed(files.a, files.b, cfg.data, smoothed=smoothed)
