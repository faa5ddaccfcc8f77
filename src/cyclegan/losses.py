"""Losses, as plain functions that return tensors.

Adversarial losses are registered by name (``loss.gan``). Each one is a pair of functions of the
discriminator's raw outputs: ``discriminator(real_pred, fake_pred)`` and ``generator(fake_pred,
real_pred)``; ``real_pred`` is None for the generator unless the loss sets ``generator_needs_real``
(relativistic losses compare against D(real)). A prediction is whatever the discriminator returns:
a score map, or a tuple of heads for multi-head discriminators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclegan.registry import Registry


@dataclass(frozen=True)
class GANLoss:
    discriminator: Callable[[Any, Any], Tensor]  # (D(real), D(fake)) -> scalar
    generator: Callable[[Any, Any], Tensor]  # (D(G(x)), D(real) or None) -> scalar
    needs_gradient_penalty: bool = False
    generator_needs_real: bool = False


GAN_LOSSES: Registry = Registry("GAN loss")


# The discriminator objective is halved, as in the CycleGAN paper ("we divide the objective by 2 while
# optimizing D, which slows down the rate at which D learns relative to G"; Zhu et al. 2017, sec. 4).


@GAN_LOSSES.register("lsgan")
def lsgan() -> GANLoss:
    # Least-squares GAN (Mao et al. 2017): the paper's and seed 000's choice, more stable than BCE.
    return GANLoss(
        discriminator=lambda real, fake: 0.5 * (F.mse_loss(real, torch.ones_like(real))
                                                + F.mse_loss(fake, torch.zeros_like(fake))),
        generator=lambda fake, real=None: F.mse_loss(fake, torch.ones_like(fake)),
    )


@GAN_LOSSES.register("vanilla")
def vanilla() -> GANLoss:
    # The original GAN objective as BCE on logits (seed 002's BinaryCrossentropy(from_logits=True)).
    return GANLoss(
        discriminator=lambda real, fake: 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        ),
        generator=lambda fake, real=None: F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)),
    )


@GAN_LOSSES.register("hinge")
def hinge() -> GANLoss:
    return GANLoss(
        discriminator=lambda real, fake: 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()),
        generator=lambda fake, real=None: -fake.mean(),
    )


@GAN_LOSSES.register("wgangp")
def wgangp() -> GANLoss:
    # WGAN-GP (Gulrajani et al. 2017): the critic's gradient penalty is added by the training step.
    return GANLoss(
        discriminator=lambda real, fake: 0.5 * (fake.mean() - real.mean()),
        generator=lambda fake, real=None: -fake.mean(),
        needs_gradient_penalty=True,
    )


def build_gan_loss(name: str) -> GANLoss:
    return GAN_LOSSES.get_or_raise(name)()


def gradient_penalty(
    discriminator: nn.Module, real: Tensor, fake: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates x_hat of real and fake (WGAN-GP, eq. 3).

    real, fake: [B, C, H, W]; one mixing weight per sample.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    pred = discriminator(x_hat)
    (grad,) = torch.autograd.grad(pred.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def cycle_loss(reconstructed: Tensor, original: Tensor) -> Tensor:
    """L1 between x and F(G(x)) (paper eq. 2)."""
    return F.l1_loss(reconstructed, original)


def identity_loss(same: Tensor, original: Tensor) -> Tensor:
    """L1 between y and G(y): keeps colours when the input already looks like the target (paper 5.2)."""
    return F.l1_loss(same, original)
