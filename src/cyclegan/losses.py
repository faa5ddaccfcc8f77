"""Losses, as plain functions that return tensors.

Adversarial losses are registered by name (``loss.gan``). Each one is a pair of functions of the
discriminator's raw outputs: ``discriminator(real_pred, fake_pred)`` and ``generator(fake_pred,
real_pred)``; ``real_pred`` is None for the generator unless the loss sets ``generator_needs_real``
(relativistic losses compare against D(real)). A prediction is whatever the discriminator returns:
a score map, or a tuple of heads for multi-head discriminators.

Besides the paper's cycle and identity L1, the attention recipes' extra terms live here: the
relativistic (Jolicoeur-Martineau, ICLR 2019) patch + global loss, the gradient penalty (for any
loss), feature matching on the discriminator's features, Sobel edge and pooled-chroma colour
consistency, and learned uncertainty weights; and for small style sets, CartoonGAN's edge-promoting
term and LeCam regularisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclegan.registry import Registry

BatchMean = Callable[[Tensor], Tensor]  # scores [B, ...] -> their mean over the (global) batch, a scalar


@dataclass(frozen=True)
class GANLoss:
    discriminator: Callable[[Any, Any], Tensor]  # (D(real), D(fake)) -> scalar
    generator: Callable[[Any, Any], Tensor]  # (D(G(x)), D(real) or None) -> scalar
    # (D(x), D(real)) -> the part of ``discriminator`` that labels x fake, halved like it: what
    # ``edge_promote_loss`` adds for the edge-smoothed style images (D(real) is read by relativistic only).
    discriminator_fake: Callable[[Any, Any], Tensor]
    needs_gradient_penalty: bool = False
    generator_needs_real: bool = False
    # True when the functions read (patch, global) tuples themselves; otherwise a multi-head
    # discriminator's loss is the mean of the loss on each head (see build_gan_loss).
    handles_heads: bool = False


# Each factory takes ``batch_mean`` (see build_gan_loss); only losses that compare against a batch
# average use it.
GAN_LOSSES: Registry = Registry("GAN loss")


# The discriminator objective is halved, as in the CycleGAN paper ("we divide the objective by 2 while
# optimizing D, which slows down the rate at which D learns relative to G"; Zhu et al. 2017, sec. 4).


@GAN_LOSSES.register("lsgan")
def lsgan(*, batch_mean: BatchMean = torch.mean) -> GANLoss:
    # Least-squares GAN (Mao et al. 2017): the CycleGAN paper's choice (sec. 4), more stable than BCE.
    return GANLoss(
        discriminator=lambda real, fake: 0.5 * (F.mse_loss(real, torch.ones_like(real))
                                                + F.mse_loss(fake, torch.zeros_like(fake))),
        generator=lambda fake, real=None: F.mse_loss(fake, torch.ones_like(fake)),
        discriminator_fake=lambda fake, real=None: 0.5 * F.mse_loss(fake, torch.zeros_like(fake)),
    )


@GAN_LOSSES.register("vanilla")
def vanilla(*, batch_mean: BatchMean = torch.mean) -> GANLoss:
    # The original GAN objective as BCE on logits (TensorFlow's CycleGAN tutorial:
    # BinaryCrossentropy(from_logits=True)).
    return GANLoss(
        discriminator=lambda real, fake: 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        ),
        generator=lambda fake, real=None: F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)),
        discriminator_fake=lambda fake, real=None: 0.5 * F.binary_cross_entropy_with_logits(
            fake, torch.zeros_like(fake)),
    )


@GAN_LOSSES.register("hinge")
def hinge(*, batch_mean: BatchMean = torch.mean) -> GANLoss:
    return GANLoss(
        discriminator=lambda real, fake: 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()),
        generator=lambda fake, real=None: -fake.mean(),
        discriminator_fake=lambda fake, real=None: 0.5 * F.relu(1.0 + fake).mean(),
    )


@GAN_LOSSES.register("wgangp")
def wgangp(*, batch_mean: BatchMean = torch.mean) -> GANLoss:
    # WGAN-GP (Gulrajani et al. 2017): the critic's gradient penalty is added by the training step.
    return GANLoss(
        discriminator=lambda real, fake: 0.5 * (fake.mean() - real.mean()),
        generator=lambda fake, real=None: -fake.mean(),
        discriminator_fake=lambda fake, real=None: 0.5 * fake.mean(),
        needs_gradient_penalty=True,
    )


# The patch head is judged with MSE (as LSGAN), the global head with BCE (as RaGAN), in these proportions.
RELATIVISTIC_PATCH_WEIGHT = 0.7
RELATIVISTIC_GLOBAL_WEIGHT = 0.3


def relativistic_side(pos: Any, neg: Any, target: float, *, batch_mean: BatchMean = torch.mean) -> Tensor:
    """One side of the relativistic average loss (RaGAN: Jolicoeur-Martineau, ICLR 2019): how far ``pos``
    scores above the average of ``neg``, against ``target`` (1 = True, 0 = False).

    With (patch [B, 1, h, w], global [B, 1]) tuples:
        0.7 * MSE(pos_patch - mean(neg_patch), target)
        + 0.3 * BCE_logits(pos_global - mean(neg_global), target)
    With a single score map or logit (no global head) only the MSE term, at full weight, so the
    adversarial scale matches the other losses. "mean" is over the whole batch (and positions): the
    relativistic average discriminator of Jolicoeur-Martineau (ICLR 2019) compares each image to the
    average score of the other kind. ``batch_mean`` takes that average; under several processes it
    must span the global batch (``distributed.global_mean``), as one process would compute it.

    The mirrored fake side swaps real and fake and True for False, so its MSE target is 0;
    RaLSGAN uses -1 there instead. With 0, D holds real patches one unit above the
    average fake (and the fake ones at the real average) rather than pushing them apart symmetrically.
    """
    if isinstance(pos, (tuple, list)):
        pos_patch, pos_global = pos
        neg_patch, neg_global = neg
        patch = pos_patch - batch_mean(neg_patch)
        glob = pos_global - batch_mean(neg_global)
        patch_term = F.mse_loss(patch, torch.full_like(patch, target))
        global_term = F.binary_cross_entropy_with_logits(glob, torch.full_like(glob, target))
        return RELATIVISTIC_PATCH_WEIGHT * patch_term + RELATIVISTIC_GLOBAL_WEIGHT * global_term
    diff = pos - batch_mean(neg)
    return F.mse_loss(diff, torch.full_like(diff, target))


@GAN_LOSSES.register("relativistic")
def relativistic(*, batch_mean: BatchMean = torch.mean) -> GANLoss:
    # D wants real above the average fake ("True") and fake not above the
    # average real ("False"); G wants the mirror image. Both sides are averaged, halving D's objective
    # as for the other losses (and as RaGAN's reference code does for G).
    return GANLoss(
        discriminator=lambda real, fake: 0.5 * (relativistic_side(real, fake, 1.0, batch_mean=batch_mean)
                                                + relativistic_side(fake, real, 0.0, batch_mean=batch_mean)),
        generator=lambda fake, real: 0.5 * (relativistic_side(fake, real, 1.0, batch_mean=batch_mean)
                                            + relativistic_side(real, fake, 0.0, batch_mean=batch_mean)),
        discriminator_fake=lambda fake, real: 0.5 * relativistic_side(fake, real, 0.0, batch_mean=batch_mean),
        generator_needs_real=True,
        handles_heads=True,
    )


def _mean_over_heads(fn: Callable[[Any, Any], Tensor]) -> Callable[[Any, Any], Tensor]:
    """Apply a single-map loss to each head of a (patch, global) prediction and average."""

    def loss(a: Any, b: Any = None) -> Tensor:
        if isinstance(a, (tuple, list)):
            others = b if b is not None else (None,) * len(a)
            return sum(fn(x, y) for x, y in zip(a, others)) / len(a)
        return fn(a, b)

    return loss


def build_gan_loss(name: str, *, batch_mean: BatchMean = torch.mean) -> GANLoss:
    """The GAN loss registered as ``name``; ``batch_mean`` is the batch average used by losses that
    compare against one (relativistic): ``distributed.global_mean`` under several processes."""
    loss = GAN_LOSSES.get_or_raise(name)(batch_mean=batch_mean)
    if loss.handles_heads:
        return loss
    return dataclasses.replace(
        loss, discriminator=_mean_over_heads(loss.discriminator), generator=_mean_over_heads(loss.generator),
        discriminator_fake=_mean_over_heads(loss.discriminator_fake),
    )


def gradient_penalty(
    discriminator: nn.Module,
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    loss_scale: float = 1.0,
) -> Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates x_hat of real and fake (WGAN-GP, eq. 3).

    real, fake: [B, C, H, W]; one mixing weight per sample. For a multi-head D the gradient is that of
    the sum of all heads' scores. Used by wgangp, and by any loss when ``loss.gradient_penalty`` is
    set (added to a relativistic loss it keeps D from learning too fast).

    ``loss_scale`` is fp16 training's grad-scaler scale: the input gradient is taken of the scaled
    score and unscaled afterwards, so small fp16 gradients do not underflow (PyTorch's AMP recipe
    for gradient penalties). It does not change the result in exact arithmetic.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    pred = discriminator(x_hat)
    heads = pred if isinstance(pred, (tuple, list)) else (pred,)
    (grad,) = torch.autograd.grad(sum(h.sum() for h in heads) * loss_scale, x_hat, create_graph=True)
    grad = grad / loss_scale
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


# ----------------------------------------------------------------------------------------------
# Small style sets: the edge-promoting term and LeCam regularisation


def edge_promote_loss(gan: GANLoss, smoothed_pred: Any, real_pred: Any = None) -> Tensor:
    """The discriminator's loss for labelling edge-smoothed style images fake (CartoonGAN, Chen et al.
    CVPR 2018, eq. 2's third term; AnimeGAN keeps it).

    A style image with blurred outlines is still the style's colours and textures; labelled fake, it
    teaches D that crisp outlines are part of the style, which D's gradient then passes on to G. The
    term is the fake half of ``gan``'s own discriminator objective, halved like it, so ``lambda = 1``
    weighs smoothed images like generated ones (CartoonGAN weighs the three terms equally) and every
    GAN loss, multi-head discriminators included, gets its matching form. ``real_pred`` (D on real
    images of the same batch) is needed by relativistic losses only, which compare against it.
    """
    if gan.generator_needs_real and real_pred is None:
        raise ValueError("this GAN loss compares against D(real): pass real_pred")
    return gan.discriminator_fake(smoothed_pred, real_pred)


def _head_means(pred: Any, batch_mean: BatchMean) -> Tensor:
    """[n_heads] float32: the batch mean of each head of a prediction (a single map is one head)."""
    heads = pred if isinstance(pred, (tuple, list)) else (pred,)
    return torch.stack([batch_mean(h.detach().float()) for h in heads])


class LeCamEMA:
    """Exponential moving averages of D's mean output on real and on fake images: the anchors of
    ``lecam_regularizer`` (Tseng et al., "Regularizing Generative Adversarial Networks under Limited
    Data", CVPR 2021, sec. 3.1).

    One anchor pair per discriminator head. The averages start at zero and are bias-corrected by
    ``1 - decay**steps`` (the authors' TensorFlow code uses ``zero_debias``), so the first update sets
    the anchors to that batch's means. ``batch_mean`` must span the global batch under several
    processes (``distributed.global_mean``) so every process holds the same anchors. The anchors are
    part of the training state: ``state_dict`` / ``load_state_dict`` carry them through a resume.
    """

    def __init__(self, *, decay: float = 0.99, batch_mean: BatchMean = torch.mean) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.batch_mean = batch_mean
        self.steps = 0
        self.real: Tensor | None = None  # [n_heads] float32, not bias-corrected
        self.fake: Tensor | None = None

    def update(self, real_pred: Any, fake_pred: Any) -> None:
        """Fold one step's D(real) and D(fake) (tensors or tuples of heads; detached here) into the
        averages."""
        real, fake = _head_means(real_pred, self.batch_mean), _head_means(fake_pred, self.batch_mean)
        if self.real is None or self.fake is None:
            self.real, self.fake = torch.zeros_like(real), torch.zeros_like(fake)
        elif self.real.shape != real.shape:
            raise ValueError(f"LeCam EMA holds {self.real.numel()} head(s), the discriminator gave "
                             f"{real.numel()}")
        self.real = self.real.to(real.device)
        self.fake = self.fake.to(fake.device)
        self.real = self.decay * self.real + (1.0 - self.decay) * real
        self.fake = self.decay * self.fake + (1.0 - self.decay) * fake
        self.steps += 1

    def anchors(self) -> tuple[Tensor, Tensor]:
        """(alpha_R, alpha_F), each [n_heads]: the bias-corrected averages of D(real) and D(fake)."""
        if self.real is None or self.fake is None or not self.steps:
            raise RuntimeError("LeCam anchors are read before the first update")
        correction = 1.0 - self.decay ** self.steps
        return self.real / correction, self.fake / correction

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "steps": self.steps, "real": self.real, "fake": self.fake}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if float(state["decay"]) != self.decay:
            raise ValueError(f"LeCam EMA state has decay {state['decay']}, this run uses {self.decay}")
        self.steps = int(state["steps"])
        self.real = None if state["real"] is None else state["real"].clone()
        self.fake = None if state["fake"] is None else state["fake"].clone()


def lecam_regularizer(real_pred: Any, fake_pred: Any, ema: LeCamEMA) -> Tensor:
    """R_LC = E[relu(D(x) - alpha_F)^2] + E[relu(alpha_R - D(G(z)))^2], added to D's loss times
    ``loss.lambda_lecam`` (Tseng et al. 2021, eq. 3).

    The anchors are moving averages of D's own outputs (``ema``; update it with this step's outputs
    first, as the authors do). The term pulls D's scores on real images toward where its fake scores
    have been, and fake scores toward the real ones, so D cannot drive them apart without bound: on a
    few hundred images, that divergence is how D memorises the training set. The one-sided (ReLU)
    form follows the authors' released code: only the side that widens the gap is penalised. Both
    inputs may be tuples of heads (one anchor pair each; the heads' terms are averaged).
    """
    alpha_real, alpha_fake = ema.anchors()
    reals = real_pred if isinstance(real_pred, (tuple, list)) else (real_pred,)
    fakes = fake_pred if isinstance(fake_pred, (tuple, list)) else (fake_pred,)
    if not len(reals) == len(fakes) == alpha_real.numel():
        raise ValueError(f"LeCam: {len(reals)} real and {len(fakes)} fake heads, {alpha_real.numel()} "
                         "anchor(s)")
    terms = [
        F.relu(r.float() - alpha_fake[i]).pow(2).mean() + F.relu(alpha_real[i] - f.float()).pow(2).mean()
        for i, (r, f) in enumerate(zip(reals, fakes))
    ]
    return sum(terms) / len(terms)


def cycle_loss(reconstructed: Tensor, original: Tensor) -> Tensor:
    """L1 between x and F(G(x)) (paper eq. 2)."""
    return F.l1_loss(reconstructed, original)


def identity_loss(same: Tensor, original: Tensor) -> Tensor:
    """L1 between y and G(y): keeps colours when the input already looks like the target (paper 5.2)."""
    return F.l1_loss(same, original)


# ----------------------------------------------------------------------------------------------
# Extra generator terms (the attention and sprite recipes)


def feature_matching_loss(fake_features: Sequence[Tensor], real_features: Sequence[Tensor]) -> Tensor:
    """Mean over layers of L1(features of generated images, features of real target images).

    A perceptual loss whose features come from the discriminator being trained rather than a
    pre-trained network (feature matching, pix2pixHD: Wang et al., CVPR 2018, eq. 4). The real
    features are constants (detached): the term moves the generator, never D. Pass
    ``D.features(x)[:-1]``, the intermediate activations; the last element is the score map, which the
    adversarial loss already covers. The L1 is taken position by position between a generated image
    and a real target-domain image of the same batch slot, which for unpaired data pulls generated
    images toward target-domain feature statistics rather than toward one particular picture.
    """
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError(f"feature lists differ or are empty: {len(fake_features)} vs {len(real_features)}")
    total = sum(F.l1_loss(f, r.detach()) for f, r in zip(fake_features, real_features))
    return total / len(fake_features)


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def sobel_edges(x: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Sobel gradient magnitude of the luminance: [B, 3, H, W] -> [B, 1, H, W].

    Replicate padding, so a flat border has no edge; ``eps`` inside the square root keeps the gradient
    finite where the image is flat.
    """
    luma = sum(w * x[:, i : i + 1] for i, w in enumerate(_LUMA))  # [B, 1, H, W]
    kx = torch.tensor(_SOBEL_X, device=x.device, dtype=x.dtype)
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)  # [2, 1, 3, 3]: d/dx, d/dy
    grad = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernels)  # [B, 2, H, W]
    return torch.sqrt(grad.pow(2).sum(1, keepdim=True) + eps)


def edge_loss(output: Tensor, source: Tensor) -> Tensor:
    """L1 between the Sobel edge maps of a generator's output and its input ("edge
    consistency"): the translation may repaint surfaces but should keep outlines where they were."""
    return F.l1_loss(sobel_edges(output), sobel_edges(source))


def chroma(x: Tensor) -> Tensor:
    """Cb and Cr (ITU-R BT.601; the offset cancels in differences): [B, 3, H, W] -> [B, 2, H, W]."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    return torch.cat([cb, cr], dim=1)


def color_loss(output: Tensor, source: Tensor, *, pool: int = 4) -> Tensor:
    """L1 between the chroma of output and input, each average-pooled by ``pool`` ("colour
    consistency", in the spirit of DPED's colour loss: Ignatov et al., ICCV 2017). Chroma leaves
    brightness, shading and outlines free; pooling leaves texture free, so what is held is the broad
    hue of each region: a brown animal stays a brown sprite."""
    a, b = chroma(output), chroma(source)
    if pool > 1:
        a = F.avg_pool2d(a, pool, ceil_mode=True)
        b = F.avg_pool2d(b, pool, ceil_mode=True)
    return F.l1_loss(a, b)


def tone_loss(output: Tensor, source: Tensor, *, pool: int = 4) -> Tensor:
    """L1 between output and input RGB, each average-pooled by ``pool`` (DPED's colour loss, a
    distance between blurred images: Ignatov et al., ICCV 2017, sec. 3). Where ``color_loss`` holds
    the hue only, this also holds each region's brightness, so a cycle-consistent pair of generators
    cannot settle on inverted tones (dark skies, light horses), which the identity loss prevents at
    the cost of two more generator passes; pooling leaves texture and outlines free to change.
    output, source: [B, 3, H, W] -> scalar."""
    if pool > 1:
        output = F.avg_pool2d(output, pool, ceil_mode=True)
        source = F.avg_pool2d(source, pool, ceil_mode=True)
    return F.l1_loss(output, source)


# ----------------------------------------------------------------------------------------------
# Adaptive loss weighting


def uncertainty_weighted(losses: Tensor, log_vars: Tensor) -> Tensor:
    """sum_i exp(-s_i) * L_i + s_i, with s_i = log sigma_i^2 learned (Kendall, Gal & Cipolla, "Multi-
    Task Learning Using Uncertainty to Weigh Losses", CVPR 2018, eq. 7 up to its factor 1/2).

    For fixed L_i the optimum is s_i = log L_i: a term's weight falls as its loss grows, and the s_i
    penalty stops every weight from collapsing to zero. losses, log_vars: [N] -> scalar.
    """
    return (torch.exp(-log_vars) * losses + log_vars).sum()


class UncertaintyWeights(nn.Module):
    """The learned s_i of ``uncertainty_weighted``, one per named generator term, starting at 0 (so
    at first every term keeps its configured lambda). The training step adds ``log_vars`` to the
    generator's optimiser and saves them with the training state.

    Only the non-adversarial terms (cycle, identity, edge, colour, tone, feature matching) are weighted:
    the adversarial loss is not a likelihood of a fixed target, and a weight that shrinks as it grows
    would let the generator switch the adversarial game off.
    """

    def __init__(self, *, names: Sequence[str]) -> None:
        super().__init__()
        if not names:
            raise ValueError("adaptive weighting needs at least one loss term")
        self.names = tuple(names)
        self.log_vars = nn.Parameter(torch.zeros(len(self.names)))

    def forward(self, terms: Mapping[str, Tensor]) -> Tensor:
        # {name: scalar} -> scalar
        stacked = torch.stack([terms[n].float() for n in self.names])
        return uncertainty_weighted(stacked, self.log_vars)

    def weights(self) -> dict[str, Tensor]:
        """The current multipliers exp(-s_i), detached, for logging."""
        w = torch.exp(-self.log_vars.detach())
        return {name: w[i] for i, name in enumerate(self.names)}
