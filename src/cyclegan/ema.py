"""Exponential moving average of generator weights (as in Karras et al.'s StyleGAN-family training).

The averaged generator is a low-pass filter over the training trajectory: GAN weights oscillate
around a good solution, and their average usually gives cleaner, less flickering images than the
latest weights. It is never trained; ``update`` runs after every generator step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``ema = decay * ema + (1 - decay) * current`` for every parameter; buffers are copied."""

    def __init__(self, net: nn.Module, *, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in net.parameters()]
        # lerp: ema + (1 - decay) * (p - ema), one fused kernel per list
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), net.buffers()):
            e.copy_(b)
