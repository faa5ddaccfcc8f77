"""Learning-rate schedules: ``optim.lr_policy`` names a pure function of the epoch, so resuming a run
needs no scheduler state, and ``optim.lr_scaling`` says how the rate grows with the global batch.

The functions take the config sections as arguments (type hints only): this module sits below
``config``, which validates ``optim.lr_policy`` against ``LR_POLICIES``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from cyclegan.registry import Registry

if TYPE_CHECKING:
    from cyclegan.config.schema import Config, OptimConfig, TrainConfig


LR_POLICIES: Registry = Registry("LR policy")


@LR_POLICIES.register("linear")
def linear_policy(epoch: int, optim: OptimConfig, train: TrainConfig) -> float:
    # Paper sec. 4: constant for the first epochs, then linearly to zero over the last decay_epochs.
    decay = train.epochs // 2 if optim.decay_epochs is None else optim.decay_epochs
    return 1.0 - max(0, epoch + 1 - (train.epochs - decay)) / float(decay + 1)


@LR_POLICIES.register("cosine")
def cosine_policy(epoch: int, optim: OptimConfig, train: TrainConfig) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * epoch / train.epochs))


@LR_POLICIES.register("cosine_restarts")
def cosine_restarts_policy(epoch: int, optim: OptimConfig, train: TrainConfig) -> float:
    # SGDR (Loshchilov & Hutter, ICLR 2017), stepped once per epoch like torch's
    # CosineAnnealingWarmRestarts: cycles of t_0, t_0 * t_mult, ... epochs, each annealing from lr to
    # eta_min and restarting at lr (SGDR: Loshchilov & Hutter, ICLR 2017, eq. 5).
    length, position = optim.t_0, epoch
    while position >= length:
        position -= length
        length *= optim.t_mult
    floor = optim.eta_min / optim.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * position / length))


@LR_POLICIES.register("step")
def step_policy(epoch: int, optim: OptimConfig, train: TrainConfig) -> float:
    return optim.step_gamma ** (epoch // optim.step_epochs)


@LR_POLICIES.register("constant")
def constant_policy(epoch: int, optim: OptimConfig, train: TrainConfig) -> float:
    return 1.0


BATCH_SCALING = {"none": lambda b: 1.0, "sqrt": math.sqrt, "linear": float}


def learning_rate(cfg: Config, epoch: int, *, world_size: int = 1) -> float:
    """The learning rate during 1-based ``epoch`` (``optim.lr`` is the rate at global batch 1)."""
    scale = BATCH_SCALING[cfg.optim.lr_scaling](cfg.train.batch_size * world_size)
    return scale * cfg.optim.lr * LR_POLICIES[cfg.optim.lr_policy](epoch - 1, cfg.optim, cfg.train)
