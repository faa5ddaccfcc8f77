"""The networks of a CycleGAN run and what builds them: the four-network container, the Adam
optimiser factory, EMA copies of the generators and the warm start from an earlier run.

Naming: ``G_A`` translates A->B and ``G_B`` translates B->A; ``D_A`` judges domain-A images (real A
against G_B's fakes) and ``D_B`` judges domain-B images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from cyclegan import checkpoint as ckpt_io
from cyclegan.config import Config
from cyclegan.ema import EMA
from cyclegan.errors import ConfigError
from cyclegan.networks import build_discriminator, build_generator
from cyclegan.sources import resolve_source


class NamedNetworks:
    """A model kind's networks as dataclass fields: ``networks()`` names them in field order (the
    checkpoint's names), leaving out an optional one that is None; ``train()`` sets their mode."""

    def networks(self) -> dict[str, nn.Module]:
        return {f.name: net for f in dataclasses.fields(self) if (net := getattr(self, f.name)) is not None}

    def train(self, mode: bool = True) -> None:
        for net in self.networks().values():
            net.train(mode)


@dataclass
class CycleGAN(NamedNetworks):
    G_A: nn.Module  # A -> B
    G_B: nn.Module  # B -> A
    D_A: nn.Module  # real A vs G_B(B)
    D_B: nn.Module  # real B vs G_A(A)


def build_models(cfg: Config, device: torch.device) -> CycleGAN:
    """Build the four networks; weights depend only on ``train.seed``."""
    torch.manual_seed(cfg.train.seed)
    nets = cyclegan_networks(cfg)
    build_networks_on(nets, cfg, device, generators=("G_A", "G_B"))
    return nets


def cyclegan_networks(cfg: Config, context: dict | None = None) -> CycleGAN:
    """G_A, G_B, D_A, D_B built in this order (their weights follow the RNG's state)."""
    m = cfg.model
    return CycleGAN(
        G_A=build_generator(m.generator, init=m.init, init_gain=m.init_gain),
        G_B=build_generator(m.generator, init=m.init, init_gain=m.init_gain),
        D_A=build_discriminator(m.discriminator, init=m.init, init_gain=m.init_gain),
        D_B=build_discriminator(m.discriminator, init=m.init, init_gain=m.init_gain),
    )


def build_networks_on(nets, cfg: Config, device: torch.device, *, generators: tuple[str, ...]) -> None:
    """Every network of ``nets`` onto ``device`` in the run's memory format; the ``generators`` with
    checkpointed residual blocks under ``train.grad_checkpointing``."""
    memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    for net in nets.networks().values():
        net.to(device=device, memory_format=memory_format)
    if cfg.train.grad_checkpointing:
        for name in generators:
            g = getattr(nets, name)
            if not hasattr(g, "checkpoint_blocks"):  # validation refuses it first; a hand-built config too
                raise ConfigError(f"train.grad_checkpointing: generator {cfg.model.generator.name} "
                                  "does not support it")
            g.checkpoint_blocks = True


def adam(params, cfg: Config, device: torch.device, *, lr_scale: float = 1.0) -> torch.optim.Adam:
    """Adam at ``optim.lr`` x ``lr_scale`` (the discriminators' ``optim.d_lr_ratio``); the training loop
    sets each epoch's rate with the same scale."""
    # Fused Adam is one kernel per step on CUDA; elsewhere the default (foreach) implementation.
    return torch.optim.Adam(
        params, lr=cfg.optim.lr * lr_scale, betas=(cfg.optim.beta1, cfg.optim.beta2),
                            fused=device.type == "cuda"
    )


def build_ema(cfg: Config, generators: dict[str, nn.Module]) -> dict[str, EMA]:
    if not cfg.train.ema_decay:
        return {}
    return {name: EMA(net, decay=cfg.train.ema_decay) for name, net in generators.items()}


def warm_start(models: CycleGAN, cfg: Config) -> list[str]:
    """Copy the networks named in ``train.init_nets`` from the run or checkpoint ``train.init_from``.

    A discriminator pre-trained on the same domains steadies the first steps on a small dataset;
    this starts D_A/D_B (or any of the four) from an earlier run's weights. The architectures must
    match; the optimiser state is not copied.
    """
    ckpt = ckpt_io.resolve_checkpoint(resolve_source(cfg.train.init_from))
    names = [n.strip() for n in cfg.train.init_nets.split(",")]
    nets = models.networks()
    for name in names:
        if name not in nets:
            raise ConfigError(f"train.init_nets: a {cfg.model.kind} model has no {name} (it has "
                              f"{', '.join(nets)})")
        ckpt_io.load_into(nets[name], ckpt, name)
    return names
