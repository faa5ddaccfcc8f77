"""Each loss against values computed by hand."""

import io
import math

import pytest
import torch
from torch import nn

from cyclegan.losses import (
    GAN_LOSSES,
    LeCamEMA,
    build_gan_loss,
    cycle_loss,
    edge_promote_loss,
    gradient_penalty,
    identity_loss,
    lecam_regularizer,
)

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


# ----------------------------------------------------------------------------------------------
# Edge-promoting term (CartoonGAN) and LeCam (Tseng et al. 2021), by hand on tiny tensors

SMOOTH = torch.tensor([[1.0, -0.5], [0.0, 2.0]])  # D's scores on edge-smoothed style images


@pytest.mark.parametrize(
    "name, expected",
    [
        # 0.5 * mean(s^2) = 0.5 * (1 + .25 + 0 + 4) / 4
        ("lsgan", 0.5 * 5.25 / 4),
        # 0.5 * mean(softplus(s)): BCE-with-logits against 0
        ("vanilla", 0.5 * sum(_softplus(x) for x in (1.0, -0.5, 0.0, 2.0)) / 4),
        # 0.5 * mean(relu(1 + s)) = 0.5 * (2 + .5 + 1 + 3) / 4
        ("hinge", 0.5 * 6.5 / 4),
        # 0.5 * mean(s)
        ("wgangp", 0.5 * 2.5 / 4),
        # 0.5 * mean((s - mean(REAL))^2), mean(REAL) = 0.625: .140625 + 1.265625 + .390625 + 1.890625
        ("relativistic", 0.5 * 3.6875 / 4),
    ],
)
def test_edge_promote_term_by_hand(name, expected):
    gan = build_gan_loss(name)
    assert edge_promote_loss(gan, SMOOTH, REAL).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["lsgan", "vanilla", "hinge", "wgangp"])
def test_edge_promote_term_is_the_fake_half_of_the_discriminator_loss(name):
    # The smoothed images are labelled exactly as generated ones: swapping them in for the fakes
    # changes the D objective by the edge term's difference. (Not for relativistic, whose real side
    # also reads the fakes' mean; its edge term is checked by hand above.)
    gan = build_gan_loss(name)
    d_fake = gan.discriminator(REAL, FAKE)
    d_smooth = gan.discriminator(REAL, SMOOTH)
    diff = edge_promote_loss(gan, SMOOTH, REAL) - edge_promote_loss(gan, FAKE, REAL)
    assert (d_smooth - d_fake).item() == pytest.approx(diff.item(), abs=1e-6)


def test_edge_promote_term_averages_the_heads_of_a_dual_discriminator():
    gan = build_gan_loss("lsgan")
    patch, glob = SMOOTH.reshape(1, 1, 2, 2), torch.tensor([[3.0]])
    both = edge_promote_loss(gan, (patch, glob))
    assert both.item() == pytest.approx((0.5 * 5.25 / 4 + 0.5 * 9.0) / 2)
    rel = build_gan_loss("relativistic")  # handles its heads itself: 0.7 patch MSE + 0.3 global BCE
    real = (REAL.reshape(1, 1, 2, 2), torch.tensor([[1.0]]))
    expected = 0.5 * (0.7 * 3.6875 / 4 + 0.3 * _softplus(3.0 - 1.0))
    assert edge_promote_loss(rel, (patch, glob), real).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="pass real_pred"):
        edge_promote_loss(rel, (patch, glob))


def test_edge_promote_gradient_reaches_the_discriminator_only():
    torch.manual_seed(0)
    d = nn.Conv2d(3, 1, 3, padding=1)
    smoothed = torch.rand(2, 3, 8, 8) * 2 - 1  # data: no generator is involved in this term
    loss = edge_promote_loss(build_gan_loss("lsgan"), d(smoothed))
    loss.backward()
    assert d.weight.grad is not None and d.weight.grad.abs().sum() > 0
    # lsgan's fake term lowers D's scores on the smoothed images: one SGD step must reduce it.
    with torch.no_grad():
        for p in d.parameters():
            p -= 0.1 * p.grad
    assert edge_promote_loss(build_gan_loss("lsgan"), d(smoothed)).item() < loss.item()


def test_lecam_anchors_are_bias_corrected_moving_averages():
    ema = LeCamEMA(decay=0.5)
    ema.update(torch.tensor([0.0, 2.0]), torch.tensor([-1.0, -1.0]))  # means 1, -1
    real, fake = ema.anchors()
    assert (real.item(), fake.item()) == (1.0, -1.0)  # the first update sets them to the batch means
    ema.update(torch.tensor([3.0]), torch.tensor([1.0]))
    # raw: 0.5 * 0.5 + 0.5 * 3 = 1.75 and 0.5 * -0.5 + 0.5 * 1 = 0.25; corrected by 1 - 0.5^2 = 0.75
    real, fake = ema.anchors()
    assert real.item() == pytest.approx(1.75 / 0.75) and fake.item() == pytest.approx(0.25 / 0.75)
    with pytest.raises(RuntimeError, match="before the first update"):
        LeCamEMA().anchors()
    with pytest.raises(ValueError, match="decay"):
        LeCamEMA(decay=1.0)


def test_lecam_regularizer_by_hand():
    ema = LeCamEMA(decay=0.5)
    ema.update(torch.tensor([1.0]), torch.tensor([-1.0]))
    ema.update(torch.tensor([3.0]), torch.tensor([1.0]))  # anchors 7/3 (real), 1/3 (fake)
    real_pred = torch.tensor([2.0, 0.0], requires_grad=True)
    fake_pred = torch.tensor([0.0, 3.0], requires_grad=True)
    reg = lecam_regularizer(real_pred, fake_pred, ema)
    # mean(relu(r - 1/3)^2) = ((5/3)^2 + 0) / 2;  mean(relu(7/3 - f)^2) = ((7/3)^2 + 0) / 2
    assert reg.item() == pytest.approx(25 / 18 + 49 / 18)
    reg.backward()
    # d/dr = 2 (r - 1/3) / 2 where positive; d/df = -2 (7/3 - f) / 2 where positive
    assert torch.allclose(real_pred.grad, torch.tensor([5 / 3, 0.0]))
    assert torch.allclose(fake_pred.grad, torch.tensor([-7 / 3, 0.0]))


def test_lecam_gradient_reaches_the_discriminator_not_the_anchors():
    torch.manual_seed(0)
    d = nn.Conv2d(3, 1, 3, padding=1)
    real, fake = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8) - 1
    ema = LeCamEMA(decay=0.9)
    ema.update(d(real), d(fake))  # outputs with a graph: the EMA must hold detached values
    assert not ema.real.requires_grad and not ema.fake.requires_grad
    ema.update(torch.full((2, 1, 8, 8), 5.0), torch.full((2, 1, 8, 8), -5.0))  # anchors far apart
    reg = lecam_regularizer(d(real), d(fake), ema)
    reg.backward()
    assert reg.item() > 0 and d.weight.grad.abs().sum() > 0


def test_lecam_with_a_dual_discriminator_keeps_one_anchor_pair_per_head():
    ema = LeCamEMA(decay=0.0)  # decay 0: the anchors are the last batch means
    ema.update((torch.zeros(1, 1, 2, 2), torch.tensor([[4.0]])),
               (torch.ones(1, 1, 2, 2), torch.tensor([[-2.0]])))
    real, fake = ema.anchors()
    assert real.tolist() == [0.0, 4.0] and fake.tolist() == [1.0, -2.0]
    reg = lecam_regularizer((torch.full((1, 1, 2, 2), 2.0), torch.tensor([[0.0]])),
                            (torch.zeros(1, 1, 2, 2), torch.tensor([[0.0]])), ema)
    # patch: relu(2 - 1)^2 + relu(0 - 0)^2 = 1; global: relu(0 + 2)^2 + relu(4 - 0)^2 = 20; mean over heads
    assert reg.item() == pytest.approx((1.0 + 20.0) / 2)
    with pytest.raises(ValueError, match="head"):
        ema.update(torch.zeros(1), torch.zeros(1))


def test_lecam_state_round_trip_continues_bit_for_bit():
    stream = [(torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)) for _ in range(6)]
    straight = LeCamEMA(decay=0.99)
    for r, f in stream:
        straight.update(r, f)
    first = LeCamEMA(decay=0.99)
    for r, f in stream[:3]:
        first.update(r, f)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = LeCamEMA(decay=0.99)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for r, f in stream[3:]:
        resumed.update(r, f)
    assert resumed.steps == straight.steps == 6
    for a, b in zip(resumed.anchors(), straight.anchors()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="decay"):
        LeCamEMA(decay=0.9).load_state_dict(first.state_dict())
