"""What each model kind reads from the config, and which keys take effect only when another is on.

A model kind (``model.kind``) declares here the networks it checkpoints, the ``loss.*`` and
``distill.*`` keys it reads and the rules that concern it alone; its step lives in ``training/``
under the same name (``TRAIN_STEPS``; a test checks the two name sets agree). This module sits in the
config layer, below training, because validation must refuse a key the kind does not read before any
work starts. Every other section (``model.init*``, ``data``, ``optim``, ``train``) is read by every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cyclegan.config.schema import Config
from cyclegan.errors import ConfigError, short_repr
from cyclegan.losses import build_gan_loss
from cyclegan.networks import has_distill_features

# Keys every kind with a discriminator reads: the adversarial loss and its regularisers (gradient
# penalty, LeCam: each discriminator's own term, so they apply to one discriminator as to two), the pool.
ADVERSARIAL = frozenset({"loss.gan", "loss.lambda_gan", "loss.lambda_gp", "loss.gradient_penalty",
                         "loss.pool_size", "loss.lambda_lecam", "loss.lecam_decay"})
# CartoonGAN's edge-promoting term on the style domain's discriminator.
EDGE_PROMOTE = frozenset({"loss.lambda_edge_promote", "loss.edge_promote_direction", "loss.edge_smooth_dir"})
CYCLE = frozenset({"loss.lambda_cyc", "loss.lambda_id", "loss.lambda_fm", "loss.lambda_edge",
                   "loss.lambda_color", "loss.lambda_tone", "loss.color_pool", "loss.lambda_vq",
                   "loss.adaptive_weighting"})
PATCH_NCE = frozenset({"loss.lambda_nce", "loss.nce_idt", "loss.nce_temperature", "loss.nce_patches",
                       "loss.nce_mlp_dim", "loss.flip_equivariance"})
DISTILL = frozenset({"distill.teacher", "distill.direction", "distill.teacher_sha256",
                     "distill.lambda_distill", "distill.lambda_feature", "distill.real",
                     "distill.inherit_discriminator"})
# The sections whose keys belong to some kinds only; a kind that does not list a key refuses it.
KIND_SECTIONS = ("loss", "distill")
DISTILL_REAL = ("b", "teacher")  # what the distilled student's discriminator sees as real
ADAPTIVE_WEIGHTING = ("none", "uncertainty")
EDGE_PROMOTE_DIRECTIONS = ("a", "b", "both")  # whose discriminator sees the edge-smoothed copies


@dataclass(frozen=True)
class KindOptions:
    """One model kind's declaration: ``networks`` are the checkpoint's network names (the ones
    ``train.init_nets`` may name), ``options`` the ``loss.*`` / ``distill.*`` keys it reads, ``check``
    its own rules, given the config and its generator built on the meta device."""

    networks: tuple[str, ...]
    options: frozenset[str]
    check: Callable[[Config, nn.Module], None] = lambda cfg, generator: None


def _check_cyclegan(cfg: Config, generator: nn.Module) -> None:
    loss = cfg.loss
    weighed = ("lambda_cyc", "lambda_id", "lambda_edge", "lambda_color", "lambda_tone", "lambda_fm")
    if loss.adaptive_weighting != "none" and not any(getattr(loss, n) > 0 for n in weighed):
        raise ConfigError("loss.adaptive_weighting: no term to weigh (lambda_cyc/id/edge/color/tone/fm are "
                          "all 0)")


def _check_one_sided(cfg: Config, generator: nn.Module) -> None:
    if cfg.model.generator.name != "resnet":
        raise ConfigError(f"model.kind {cfg.model.kind}: PatchNCE taps the ResNet encoder; "
                          f"model.generator.name must be resnet, got {cfg.model.generator.name}")
    if cfg.loss.edge_promote_direction != "b":
        raise ConfigError(f"loss.edge_promote_direction: model.kind {cfg.model.kind} has one discriminator, "
                          f"on domain B; use b, not {short_repr(cfg.loss.edge_promote_direction)}")


def _check_distill(cfg: Config, generator: nn.Module) -> None:
    if not cfg.distill.teacher:
        raise ConfigError("distill.teacher: model.kind distill needs a teacher (a run, checkpoint or "
                          "exported generator); use `cyclegan distill --teacher RUN`")
    if cfg.distill.lambda_feature > 0 and not has_distill_features(generator):
        raise ConfigError(f"distill.lambda_feature: generator {cfg.model.generator.name} exposes no "
                          "intermediate features (resnet, mobile_resnet and animeganv2 do); set it to 0 to "
                          "match outputs only")
    if getattr(generator, "aux_losses", False):
        raise ConfigError("model.generator.vq_codebook_size: the distillation step has no VQ losses; "
                          "used by model kind cyclegan")


KINDS: dict[str, KindOptions] = {
    # Two generators, two discriminators, cycle loss (Zhu et al., ICCV 2017).
    "cyclegan": KindOptions(networks=("G_A", "G_B", "D_A", "D_B"), options=ADVERSARIAL | EDGE_PROMOTE | CYCLE,
                            check=_check_cyclegan),
    # One generator A -> B, one discriminator, PatchNCE instead of the cycle (Park et al., ECCV 2020);
    # FastCUT is the same step with the fastcut preset's loss settings.
    "cut": KindOptions(networks=("G_A", "D_B", "F"), options=ADVERSARIAL | EDGE_PROMOTE | PATCH_NCE,
                       check=_check_one_sided),
    "fastcut": KindOptions(networks=("G_A", "D_B", "F"), options=ADVERSARIAL | EDGE_PROMOTE | PATCH_NCE,
                           check=_check_one_sided),
    # A student generator A -> B learns a trained one (GAN Compression, Li et al., CVPR 2020).
    "distill": KindOptions(networks=("G_A", "D_B", "P"), options=ADVERSARIAL | DISTILL, check=_check_distill),
}
MODEL_KINDS = tuple(KINDS)


def _gradient_penalty_on(cfg: Config) -> bool:
    return cfg.loss.gradient_penalty or build_gan_loss(cfg.loss.gan).needs_gradient_penalty


# key -> (is it in effect?, the condition in words): a key that only shapes another one takes effect
# only when that one is on, for every kind and network alike.
ACTIVE_WHEN: dict[str, tuple[Callable[[Config], bool], str]] = {
    "loss.lambda_gp": (_gradient_penalty_on, "loss.gan wgangp or loss.gradient_penalty true"),
    "loss.color_pool": (lambda c: c.loss.lambda_color > 0 or c.loss.lambda_tone > 0,
                        "loss.lambda_color or loss.lambda_tone > 0"),
    "loss.lambda_vq": (lambda c: c.model.generator.vq_codebook_size > 0,
                       "model.generator.vq_codebook_size > 0"),
    "loss.lecam_decay": (lambda c: c.loss.lambda_lecam > 0, "loss.lambda_lecam > 0"),
    "loss.edge_promote_direction": (lambda c: c.loss.lambda_edge_promote > 0, "loss.lambda_edge_promote > 0"),
    "loss.edge_smooth_dir": (lambda c: c.loss.lambda_edge_promote > 0, "loss.lambda_edge_promote > 0"),
    "train.init_nets": (lambda c: bool(c.train.init_from), "train.init_from set"),
    "train.compile_mode": (lambda c: c.train.compile, "train.compile true"),
    "optim.decay_epochs": (lambda c: c.optim.lr_policy == "linear", "optim.lr_policy linear"),
    "optim.step_epochs": (lambda c: c.optim.lr_policy == "step", "optim.lr_policy step"),
    "optim.step_gamma": (lambda c: c.optim.lr_policy == "step", "optim.lr_policy step"),
    "optim.t_0": (lambda c: c.optim.lr_policy == "cosine_restarts", "optim.lr_policy cosine_restarts"),
    "optim.t_mult": (lambda c: c.optim.lr_policy == "cosine_restarts", "optim.lr_policy cosine_restarts"),
    "optim.eta_min": (lambda c: c.optim.lr_policy == "cosine_restarts", "optim.lr_policy cosine_restarts"),
}
