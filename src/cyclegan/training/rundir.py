"""The run directory's rules: which config a new or resumed run uses, what ``train`` refuses before
touching anything (a folder of someone else's files, a resume without a checkpoint), how an old run
is cleared on ``--overwrite``, which settings a resume may not change, and the hint printed after a
stop. Which checkpoint a resume uses (the newest complete one) is ``checkpoint.resume_checkpoint``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cyclegan import checkpoint as ckpt_io
from cyclegan.config import Config, build_config, dotted, load_config_json
from cyclegan.errors import CheckpointError, RunDirError

RUN_ARTEFACTS = ("config.json", "log.jsonl", "metrics.jsonl", "samples", "checkpoints", "tensorboard",
                 "edge_smoothed")

# Changing these on --resume would change what the saved weights or data order mean.
RESUME_FIXED = ("model", "train.batch_size", "train.seed", "data.max_dataset_size", "data.val_fraction",
                "data.crop_size", "loss.gan", "loss.pool_size")


def resolve_run_config(
    out: Path,
    *,
    resume: bool,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: dict | None = None,
    sets=(),
) -> Config:
    """The config of a new run, or of a resumed one: its saved ``config.json`` plus any new flags.

    A new run's ``train.precision`` is "auto" unless the preset, the config file or a flag sets it; a
    resumed run keeps the precision its config.json recorded (``train`` records the resolved one).
    """
    base = None if resume else {"train": {"precision": "auto"}}
    if resume:
        saved = Path(out) / "config.json"
        if not saved.is_file():
            raise RunDirError(f"{out}: nothing to resume (no config.json; is this a run directory?)")
        base = load_config_json(saved).to_dict()
        # --max-steps bounds one invocation (a smoke run, a time slice), not the run: a plain
        # --resume after `--max-steps N` continues to the configured epochs.
        base["train"]["max_steps"] = 0
        base["train"]["max_minutes"] = 0.0
    # Data folders are stored absolute so a run resumes from any working directory.
    overrides = {
        key: (str(Path(value).expanduser().resolve()) if key in DATA_PATH_KEYS and value else value)
        for key, value in (overrides or {}).items()
    }
    return build_config(base=base, preset=preset, config_file=config_file, overrides=overrides, sets=sets)


DATA_PATH_KEYS = ("data.dataroot", "data.data_a", "data.data_b")


def stop_after(out: Path, steps: int | None, *, resume: bool) -> int | None:
    """``train.max_steps`` for "train ``steps`` more iterations in this invocation" (the command
    line's ``--max-steps``): the iteration at which the run stops, counted from the step of the
    checkpoint a resume continues from. None passes None through (no budget)."""
    if not steps or not resume:
        return steps
    if not (Path(out) / "config.json").is_file():
        return steps  # train refuses this resume itself, with its own message
    try:
        done = ckpt_io.checkpoint_step(ckpt_io.resume_checkpoint(out))
    except CheckpointError:
        return steps  # no checkpoint to resume: train says so
    return steps + (done or 0)


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Every refusal ``prepare_run_dir`` can make, without touching anything: ``train`` calls this
    first, then checks the data, and only then lets ``prepare_run_dir`` delete an old run."""
    if resume:
        if not (out / "config.json").is_file():
            raise RunDirError(f"{out}: nothing to resume (no config.json; is this a run directory?)")
        ckpt_io.resume_checkpoint(out)  # raises with a clear message when there is none
        return
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            if not ckpt_io.run_checkpoints(out, resumable=True):  # --resume would only fail
                raise RunDirError(f"{out}: run directory is not empty and holds no checkpoint to resume; "
                                  "use --overwrite to start over")
            raise RunDirError(
                f"{out}: run directory is not empty; use --resume to continue it or --overwrite to start over"
            )
        strangers = [p.name for p in out.iterdir() if p.name not in RUN_ARTEFACTS]
        if strangers:
            raise RunDirError(
                f"{out}: holds files that are not run artefacts ({', '.join(sorted(strangers)[:3])}); "
                "refusing to overwrite it, choose another --out"
            )


def resume_hint(out: Path) -> str:
    """What to tell the user after a stop: how to continue, or (nothing saved) how to start again."""
    if ckpt_io.run_checkpoints(out, resumable=True):
        return f"checkpoint saved; continue with: cyclegan train --out {out} --resume"
    return (f"no checkpoint was saved; start again with --overwrite (cyclegan train --out {out} ... "
            "--overwrite)")


def prepare_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    check_run_dir(out, resume=resume, overwrite=overwrite)
    if resume:
        return
    if out.is_dir() and any(out.iterdir()):  # check_run_dir allowed it: --overwrite, run artefacts only
        for name in RUN_ARTEFACTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{out}: cannot create the run directory ({e.strerror or e})") from None


def check_resume_compatible(saved: Config, requested: Config, where: Path) -> None:
    a, b = dotted(saved.to_dict()), dotted(requested.to_dict())
    for key in a:
        if any(key == f or key.startswith(f + ".") for f in RESUME_FIXED) and a[key] != b.get(key):
            raise CheckpointError(
                f"{where}: incompatible with the checkpoint: {key} was {a[key]!r}, now {b.get(key)!r} "
                "(start a new run to change it)"
            )

