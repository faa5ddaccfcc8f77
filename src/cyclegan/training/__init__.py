"""Training: ``train`` runs a CycleGAN, CUT or FastCUT run into a run directory.

The package holds one concept per module:

    models    the four CycleGAN networks, the Adam factory, EMA copies, the warm start
    step      ``TrainStep`` (what every kind's iteration shares), ``ModelKind`` (what a kind states),
              ``build_train_step`` (the shared machinery, once), ``TRAIN_STEPS`` and the CycleGAN kind
    cut       the CUT / FastCUT kind (Park et al. 2020)
    distill   the distillation kind (a student generator learns a trained teacher; GAN Compression,
              Li et al. 2020) and the config of such a run
    rundir    run-directory rules: config of a new or resumed run, refusals, --overwrite, resume checks
    banner    what a run will do and cost: the start banner, the measured estimate, "auto" precision
    log       ``log.jsonl`` and TensorBoard scalars
    samples   sample grids
    state     the training state saved for an exact resume (``state.pt``)
    signals   Ctrl-C / SIGTERM: stop after this iteration and save
    recorder  what the loop records between iterations: loss window, checkpoints, evaluation, stop record
    loop      ``train``: the loop itself, in named phases read top to bottom

Importing the package imports every step builder, so ``TRAIN_STEPS`` always holds every model kind.
"""

from cyclegan.training.cut import CUTNets, CUTStep
from cyclegan.training.distill import (
    DistillNets,
    DistillStep,
    distill_run_config,
    teacher_fingerprint,
)
from cyclegan.training.log import JsonlLog
from cyclegan.training.loop import TrainResult, train
from cyclegan.training.models import CycleGAN, adam, build_ema, build_models, warm_start
from cyclegan.training.rundir import (
    DATA_PATH_KEYS,
    RESUME_FIXED,
    RUN_ARTEFACTS,
    check_resume_compatible,
    check_run_dir,
    prepare_run_dir,
    resolve_run_config,
    resume_hint,
    stop_after,
)
from cyclegan.training.samples import sample_grid, save_sample
from cyclegan.training.signals import STOP_SIGNALS, StopFlag, ignore_stop_signals
from cyclegan.training.state import restore_training_state, training_state
from cyclegan.training.step import (
    TRAIN_STEPS,
    CycleGANStep,
    ModelKind,
    TrainStep,
    build_train_step,
    weighted_terms,
)

__all__ = [
    "DATA_PATH_KEYS",
    "RESUME_FIXED",
    "RUN_ARTEFACTS",
    "STOP_SIGNALS",
    "TRAIN_STEPS",
    "CUTNets",
    "CUTStep",
    "CycleGAN",
    "CycleGANStep",
    "DistillNets",
    "DistillStep",
    "JsonlLog",
    "ModelKind",
    "StopFlag",
    "TrainResult",
    "TrainStep",
    "adam",
    "build_ema",
    "build_models",
    "build_train_step",
    "check_resume_compatible",
    "check_run_dir",
    "distill_run_config",
    "ignore_stop_signals",
    "prepare_run_dir",
    "resolve_run_config",
    "restore_training_state",
    "resume_hint",
    "sample_grid",
    "save_sample",
    "stop_after",
    "teacher_fingerprint",
    "train",
    "training_state",
    "warm_start",
    "weighted_terms",
]
