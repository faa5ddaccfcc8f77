"""Each loss against values computed by hand."""

import math

import pytest
import torch
from torch import nn

from cyclegan.losses import GAN_LOSSES, build_gan_loss, cycle_loss, gradient_penalty, identity_loss

REAL = torch.tensor([[0.5, 1.0], [2.0, -1.0]])
FAKE = torch.tensor([[0.0, 0.5], [-0.5, 1.0]])


def test_registry_has_every_documented_loss():
    assert set(GAN_LOSSES) == {"lsgan", "vanilla", "hinge", "wgangp", "relativistic"}


def test_lsgan_by_hand():
    gan = build_gan_loss("lsgan")
    # D: 0.5 * (mean((r-1)^2) + mean(f^2)); (r-1)^2 = .25, 0, 1, 4 -> 1.3125; f^2 = 0, .25, .25, 1 -> 0.375
    assert gan.discriminator(REAL, FAKE).item() == pytest.approx(0.5 * (1.3125 + 0.375))
    # G: mean((f-1)^2) = (1 + .25 + 2.25 + 0) / 4
    assert gan.generator(FAKE).item() == pytest.approx(3.5 / 4)


def _softplus(x):
    return math.log1p(math.exp(x))


def test_vanilla_bce_by_hand():
    gan = build_gan_loss("vanilla")
    # BCE-with-logits: target 1 -> softplus(-x), target 0 -> softplus(x)
    real_term = sum(_softplus(-x) for x in REAL.flatten().tolist()) / 4
    fake_term = sum(_softplus(x) for x in FAKE.flatten().tolist()) / 4
    assert gan.discriminator(REAL, FAKE).item() == pytest.approx(0.5 * (real_term + fake_term), rel=1e-6)
    g = sum(_softplus(-x) for x in FAKE.flatten().tolist()) / 4
    assert gan.generator(FAKE).item() == pytest.approx(g, rel=1e-6)


def test_hinge_by_hand():
    gan = build_gan_loss("hinge")
    # relu(1 - r): 0.5, 0, 0, 2 -> 0.625; relu(1 + f): 1, 1.5, 0.5, 2 -> 1.25
    assert gan.discriminator(REAL, FAKE).item() == pytest.approx(0.5 * (0.625 + 1.25))
    assert gan.generator(FAKE).item() == pytest.approx(-0.25)


def test_wgangp_by_hand_and_flags_penalty():
    gan = build_gan_loss("wgangp")
    # mean(f) = 0.25, mean(r) = 0.625
    assert gan.discriminator(REAL, FAKE).item() == pytest.approx(0.5 * (0.25 - 0.625))
    assert gan.generator(FAKE).item() == pytest.approx(-0.25)
    assert gan.needs_gradient_penalty and not build_gan_loss("lsgan").needs_gradient_penalty


def test_cycle_and_identity_are_mean_l1():
    a = torch.zeros(1, 3, 2, 2)
    b = torch.full((1, 3, 2, 2), 0.5)
    b[0, 0, 0, 0] = -1.5
    expected = (11 * 0.5 + 1.5) / 12
    assert cycle_loss(b, a).item() == pytest.approx(expected)
    assert identity_loss(b, a).item() == pytest.approx(expected)


class _Linear(nn.Module):
    """D(x) = sum(w * x): its input gradient is w everywhere, so the penalty is (||w|| - 1)^2."""

    def __init__(self, w: float):
        super().__init__()
        self.w = w

    def forward(self, x):
        return (self.w * x).flatten(1).sum(1)


def test_gradient_penalty_of_linear_critic_by_hand():
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    # ||grad|| = |w| * sqrt(4) = 2|w|; with w = 0.25 -> (0.5 - 1)^2 = 0.25
    assert gradient_penalty(_Linear(0.25), real, fake).item() == pytest.approx(0.25)
    assert gradient_penalty(_Linear(0.5), real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_is_differentiable_wrt_critic():
    critic = nn.Conv2d(3, 1, 3)
    gp = gradient_penalty(critic, torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8))
    gp.backward()
    assert critic.weight.grad is not None and torch.isfinite(critic.weight.grad).all()


def test_gradient_penalty_is_invariant_to_the_loss_scale():
    critic = nn.Conv2d(3, 1, 3)
    real, fake = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    plain = gradient_penalty(critic, real, fake)
    torch.manual_seed(0)
    scaled = gradient_penalty(critic, real, fake, loss_scale=65536.0)
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-5)
