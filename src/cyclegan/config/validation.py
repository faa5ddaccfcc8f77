"""The one place a config is checked: ranges, closed sets, cross-field rules, registry names (the
parts' registries, imported here: config sits above the parts layer), and the networks' size and fit
to the crop, measured on the meta device before anything is allocated."""

from __future__ import annotations

import dataclasses
import math

import torch

from cyclegan.config.schema import (
    ADAPTIVE_WEIGHTING,
    ANTIALIAS,
    DISTILL_REAL,
    EDGE_PROMOTE_DIRECTIONS,
    INITS,
    MODEL_KINDS,
    NETWORK_NAMES,
    NORMS,
    PREPROCESS,
    UPSAMPLE,
    Config,
    DiscriminatorConfig,
    GeneratorConfig,
    ModelConfig,
)
from cyclegan.devices import DEVICES, PRECISIONS
from cyclegan.diffaug import POLICIES, parse_policy
from cyclegan.errors import ConfigError, first_line, short_repr
from cyclegan.losses import GAN_LOSSES
from cyclegan.networks import DISCRIMINATORS, GENERATORS, has_distill_features
from cyclegan.registry import did_you_mean
from cyclegan.schedules import LR_POLICIES

# One network's weights (parameters and buffers) may take at most 4 GiB in fp32. The paper's networks
# have 11.4M (ResNet-9 generator, 45 MB) and 2.8M parameters (70x70 PatchGAN); training holds four
# networks, each with a gradient and Adam's two moments, so 4 GiB apiece is already 64 GiB of state
# before a single activation, past one 80 GB accelerator. Beyond it a config is a typo or a damaged
# config.json (ngf 131072 asked torch for 190 TB), refused before anything is allocated.
MAX_NETWORK_BYTES = 4 << 30
# Structural counts the size check itself must build on the meta device, one module each: capped so
# the check stays instant. The paper uses 6 or 9 residual blocks; every discriminator halves the
# input at least n_layers times, so more than 30 layers could not fit any image.
MAX_RESIDUAL_BLOCKS = 1000
MAX_DISCRIMINATOR_LAYERS = 30


def check_finite(key: str, number: float) -> None:
    # inf / nan pass every range check written as a comparison (nan compares false both ways), train
    # to NaN weights, and json.dumps writes them as the non-JSON tokens NaN / Infinity.
    if not math.isfinite(number):
        raise ConfigError(f"{key}: must be a finite number, got {number!r}")


def _check_all_finite(obj, prefix: str = "") -> None:
    """Every float field of every section, found by walking the dataclasses: a float field added
    later is covered without touching this."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_all_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            check_finite(prefix + f.name, value)


def short_text(text: str, limit: int = 80) -> str:
    """User-typed text (a key, a library's message quoting a value) cut for an error message, as
    ``short_repr`` cuts values but without adding quotes."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _choice(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {short_repr(value)} is not allowed{did_you_mean(value, allowed)}; "
                          f"choose from {', '.join(sorted(allowed))}")


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {short_repr(value)}")


def _at_most(key: str, value, high) -> None:
    if value > high:
        raise ConfigError(f"{key}: must be <= {high}, got {short_repr(value)}")


def validate(cfg: Config) -> None:
    """Every cross-field and range check lives here, so an invalid run fails before any work."""
    # First, so a non-finite value is reported under its own key, not as another key's range error
    # (optim.lr nan used to fail as "optim.eta_min: must be in [0, nan]").
    _check_all_finite(cfg)
    g, d = cfg.model.generator, cfg.model.discriminator
    _choice("model.generator.name", g.name, GENERATORS)
    _choice("model.generator.norm", g.norm, NORMS)
    _choice("model.generator.upsample", g.upsample, UPSAMPLE)
    _at_least("model.generator.ngf", g.ngf, 1)
    _at_least("model.generator.n_blocks", g.n_blocks, 0)
    _at_most("model.generator.n_blocks", g.n_blocks, MAX_RESIDUAL_BLOCKS)
    if not 0.0 <= g.dropout < 1.0:
        raise ConfigError(f"model.generator.dropout: must be in [0, 1), got {g.dropout}")
    _choice("model.generator.antialias", g.antialias, ANTIALIAS)
    for name in ("antialias_filter", "antialias_up_filter"):
        _at_least(f"model.generator.{name}", getattr(g, name), 1)
        _at_most(f"model.generator.{name}", getattr(g, name), 7)
    if g.antialias != "none" and g.name != "resnet":
        raise ConfigError(f"model.generator.antialias: anti-aliased resampling needs model.generator.name=resnet, "
                          f"not {short_repr(g.name)}")
    if g.antialias in ("up", "both") and g.upsample != "transpose":
        raise ConfigError(f"model.generator.antialias {g.antialias}: the blurred upsampling replaces "
                          f"model.generator.upsample; leave it transpose, not {short_repr(g.upsample)}")
    if g.name == "animeganv2" and g.ngf % 2:
        raise ConfigError(f"model.generator.ngf: animeganv2 starts at ngf/2 channels; needs an even ngf, got {g.ngf}")
    _at_least("model.generator.se_reduction", g.se_reduction, 1)
    _at_least("model.generator.cbam_every", g.cbam_every, 0)
    _at_least("model.generator.vq_codebook_size", g.vq_codebook_size, 0)
    _at_least("model.generator.vq_dim", g.vq_dim, 1)
    if not 0.0 <= g.vq_ema_decay < 1.0:
        raise ConfigError(f"model.generator.vq_ema_decay: must be in [0, 1), got {g.vq_ema_decay}")
    if g.vq_codebook_size and g.name != "attention":
        raise ConfigError(
            f"model.generator.vq_codebook_size: the VQ bottleneck needs model.generator.name=attention, "
            f"not {short_repr(g.name)}"
        )
    _choice("model.discriminator.name", d.name, DISCRIMINATORS)
    _choice("model.discriminator.norm", d.norm, NORMS)
    _at_least("model.discriminator.ndf", d.ndf, 1)
    _at_least("model.discriminator.n_layers", d.n_layers, 1)
    if d.spectral_norm and d.name not in ("patch", "pixel"):
        raise ConfigError(f"model.discriminator.spectral_norm: only patch and pixel take it (dual always has "
                          f"it), not {short_repr(d.name)}")
    _at_most("model.discriminator.n_layers", d.n_layers, MAX_DISCRIMINATOR_LAYERS)
    _choice("model.init", cfg.model.init, INITS)
    _choice("model.kind", cfg.model.kind, MODEL_KINDS)
    if cfg.model.kind in ("cut", "fastcut") and g.name != "resnet":
        raise ConfigError(f"model.kind {cfg.model.kind}: PatchNCE taps the ResNet encoder; "
                          f"model.generator.name must be resnet, got {g.name}")

    data = cfg.data
    _choice("data.preprocess", data.preprocess, PREPROCESS)
    _at_least("data.crop_size", data.crop_size, 8)
    _at_least("data.load_size", data.load_size, 8)
    if data.preprocess in ("resize_and_crop", "scale_width_and_crop") and data.load_size < data.crop_size:
        raise ConfigError(
            f"data.load_size ({data.load_size}) must be >= data.crop_size ({data.crop_size}) "
            f"with preprocess {data.preprocess}"
        )
    _at_least("data.max_dataset_size", data.max_dataset_size, 0)
    _at_least("data.num_workers", data.num_workers, 0)
    _at_least("data.n_samples", data.n_samples, 1)
    for name in ("npz_key_a", "npz_key_b"):
        if getattr(data, name) == "":
            raise ConfigError(f"data.{name}: empty array name (unset it to use the file's only array)")

    loss = cfg.loss
    _choice("loss.gan", loss.gan, GAN_LOSSES)
    for name in ("lambda_gan", "lambda_cyc", "lambda_id", "lambda_gp", "lambda_fm", "lambda_edge",
                 "lambda_color", "lambda_vq", "lambda_edge_promote", "lambda_lecam"):
        _at_least(f"loss.{name}", getattr(loss, name), 0.0)
    _choice("loss.edge_promote_direction", loss.edge_promote_direction, EDGE_PROMOTE_DIRECTIONS)
    if cfg.model.kind != "cyclegan" and loss.edge_promote_direction != "b":
        raise ConfigError(f"loss.edge_promote_direction: model.kind {cfg.model.kind} has one discriminator, "
                          f"on domain B; use b, not {short_repr(loss.edge_promote_direction)}")
    if loss.edge_smooth_dir == "":
        raise ConfigError("loss.edge_smooth_dir: empty path (unset it to cache the smoothed copies in the run)")
    if loss.edge_smooth_dir is not None and loss.edge_promote_direction == "both":
        raise ConfigError("loss.edge_smooth_dir: one folder holds one domain's copies; with "
                          "edge_promote_direction both leave it unset (the run caches both)")
    if not 0.0 <= loss.lecam_decay < 1.0:
        raise ConfigError(f"loss.lecam_decay: must be in [0, 1), got {loss.lecam_decay}")
    _at_least("loss.pool_size", loss.pool_size, 0)
    _at_least("loss.color_pool", loss.color_pool, 1)
    _choice("loss.adaptive_weighting", loss.adaptive_weighting, ADAPTIVE_WEIGHTING)
    if loss.adaptive_weighting != "none" and not any(
        getattr(loss, n) > 0 for n in ("lambda_cyc", "lambda_id", "lambda_edge", "lambda_color", "lambda_fm")
    ):
        raise ConfigError("loss.adaptive_weighting: no term to weigh (lambda_cyc/id/edge/color/fm are all 0)")

    opt = cfg.optim
    _choice("optim.lr_policy", opt.lr_policy, LR_POLICIES)
    if opt.lr <= 0:
        raise ConfigError(f"optim.lr: must be > 0, got {opt.lr}")
    for name in ("beta1", "beta2"):
        v = getattr(opt, name)
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"optim.{name}: must be in [0, 1), got {v}")
    if opt.decay_epochs is not None:
        _at_least("optim.decay_epochs", opt.decay_epochs, 0)
    _at_least("optim.step_epochs", opt.step_epochs, 1)
    _at_least("optim.t_0", opt.t_0, 1)
    _at_least("optim.t_mult", opt.t_mult, 1)
    if opt.d_lr_ratio <= 0:
        raise ConfigError(f"optim.d_lr_ratio: must be > 0, got {opt.d_lr_ratio}")
    if not 0.0 <= opt.eta_min <= opt.lr:
        raise ConfigError(f"optim.eta_min: must be in [0, optim.lr = {opt.lr}], got {opt.eta_min}")

    t = cfg.train
    _at_least("train.epochs", t.epochs, 1)
    if opt.lr_policy == "linear" and opt.decay_epochs is not None and opt.decay_epochs > t.epochs:
        raise ConfigError(
            f"optim.decay_epochs ({opt.decay_epochs}) must be <= train.epochs ({t.epochs}) "
            "with lr_policy linear"
        )
    _at_least("train.max_steps", t.max_steps, 0)
    _at_least("train.max_minutes", t.max_minutes, 0.0)
    _at_least("train.batch_size", t.batch_size, 1)
    _choice("train.device", t.device, DEVICES)
    _choice("train.precision", t.precision, ("auto", *PRECISIONS))  # auto: training.banner.resolve_precision
    for name in ("log_every", "save_latest_every", "save_epoch_every", "sample_every"):
        _at_least(f"train.{name}", getattr(t, name), 1)
    _at_least("train.keep_epochs", t.keep_epochs, 0)
    nets = [n.strip() for n in t.init_nets.split(",")]
    bad = [n for n in nets if n not in NETWORK_NAMES]
    if bad or not t.init_nets.strip():
        raise ConfigError(
            f"train.init_nets: {short_repr(t.init_nets)} is not a comma-separated list of "
            f"{', '.join(NETWORK_NAMES)}"
        )
    if t.init_from == "":
        raise ConfigError("train.init_from: empty path (unset it to start from random weights)")
    _at_least("train.eval_every", t.eval_every, 0)
    if not 0.0 <= t.classifier_min_accuracy <= 1.0:
        raise ConfigError(f"train.classifier_min_accuracy: must be in [0, 1], got {t.classifier_min_accuracy}")
    _choice("train.compile_mode", t.compile_mode, ("default", "reduce-overhead", "max-autotune"))
    _choice("optim.lr_scaling", opt.lr_scaling, ("none", "sqrt", "linear"))
    _at_least("train.num_threads", t.num_threads, 0)
    if t.ema_decay and not 0.0 < t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay: must be 0 (off) or in (0, 1), got {t.ema_decay}")
    try:
        parse_policy(t.diffaug)
    except ValueError:
        # Our own message rather than parse_policy's, which quotes the bad name uncut.
        raise ConfigError(
            f"train.diffaug: {short_repr(t.diffaug)} is not a comma-separated subset of {', '.join(POLICIES)}"
        ) from None
    _at_least("loss.nce_patches", cfg.loss.nce_patches, 1)
    _at_least("loss.nce_mlp_dim", cfg.loss.nce_mlp_dim, 1)
    if cfg.loss.nce_temperature <= 0:
        raise ConfigError(f"loss.nce_temperature: must be > 0, got {cfg.loss.nce_temperature}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be in [0, 1), got {cfg.data.val_fraction}")
    # Both networks on the meta device (shapes only, no memory): their size, then their fit to the crop.
    gen, disc = _meta_generator(g), _meta_discriminator(d)
    _check_network_size("generator", f"model.generator.ngf {g.ngf}", _weight_count(gen),
                        "model.generator.ngf, n_blocks or vq_codebook_size")
    _check_network_size("discriminator", f"model.discriminator.ndf {d.ndf}", _weight_count(disc),
                        "model.discriminator.ndf or n_layers")
    _check_discriminator_net_fits(disc, d, cfg.data.crop_size)
    multiple = int(getattr(gen, "size_multiple", 1))
    if cfg.data.crop_size % multiple:
        raise ConfigError(
            f"data.crop_size ({cfg.data.crop_size}) must be a multiple of {multiple} for generator "
            f"{cfg.model.generator.name}"
        )
    _validate_distill(cfg, student_has_features=has_distill_features(gen))


def _validate_distill(cfg: Config, *, student_has_features: bool) -> None:
    dist = cfg.distill
    _choice("distill.direction", dist.direction, ("a2b", "b2a"))
    _choice("distill.real", dist.real, DISTILL_REAL)
    for name in ("lambda_distill", "lambda_feature"):
        _at_least(f"distill.{name}", getattr(dist, name), 0.0)
    for name in ("teacher", "teacher_sha256"):
        if getattr(dist, name) == "":
            raise ConfigError(f"distill.{name}: empty (unset it)")
    if cfg.model.kind != "distill":
        return
    if not dist.teacher:
        raise ConfigError("distill.teacher: model.kind distill needs a teacher (a run, checkpoint or exported "
                          "generator); use `cyclegan distill --teacher RUN`")
    if dist.lambda_feature > 0 and not student_has_features:
        raise ConfigError(f"distill.lambda_feature: generator {cfg.model.generator.name} exposes no intermediate "
                          "features (resnet, mobile_resnet and animeganv2 do); set it to 0 to match outputs only")


def _on_meta(build, key: str, what: str):
    """``build()`` on the meta device: modules with shapes and no storage, so even a network far too
    large to allocate is described in milliseconds."""
    with torch.device("meta"):
        try:
            return build()
        except (RuntimeError, ValueError, OverflowError) as e:  # e.g. "Storage size calculation overflowed"
            raise ConfigError(f"{key}: cannot build {what} ({short_text(first_line(e), 120)})") from None


def _meta_generator(gcfg: GeneratorConfig):
    return _on_meta(lambda: GENERATORS[gcfg.name](gcfg), "model.generator", f"generator {gcfg.name}")


def _meta_discriminator(dcfg: DiscriminatorConfig):
    return _on_meta(lambda: DISCRIMINATORS[dcfg.name](dcfg), "model.discriminator", f"discriminator {dcfg.name}")


def _weight_count(net) -> int:
    # Buffers count too: an EMA-updated VQ codebook is a buffer, and takes memory like a parameter.
    return sum(t.numel() for t in net.parameters()) + sum(t.numel() for t in net.buffers())


def _check_network_size(kind: str, what: str, count: int, knobs: str) -> None:
    if count * 4 > MAX_NETWORK_BYTES:
        raise ConfigError(
            f"{what}: the {kind} would have {count:,} parameters ({count * 4 / 1e9:,.1f} GB in fp32), more "
            f"than the {MAX_NETWORK_BYTES >> 30} GiB one network may take; lower {knobs}"
        )


def estimate_parameters(model: ModelConfig) -> dict[str, int]:
    """Parameters and buffers of one generator and one discriminator of ``model``, counted on the meta
    device (no memory, no initialisation): what ``validate`` compares with MAX_NETWORK_BYTES."""
    return {"generator": _weight_count(_meta_generator(model.generator)),
            "discriminator": _weight_count(_meta_discriminator(model.discriminator))}


def _check_discriminator_net_fits(net, dcfg: DiscriminatorConfig, crop_size: int) -> None:
    with torch.device("meta"):
        try:
            net(torch.empty(1, 3, crop_size, crop_size))
        except (RuntimeError, ValueError) as e:
            raise ConfigError(
                f"model.discriminator: {dcfg.name} with n_layers {dcfg.n_layers} is too deep for "
                f"data.crop_size {crop_size} ({first_line(e)})"
            ) from None


def check_discriminator_fits(dcfg: DiscriminatorConfig, crop_size: int) -> None:
    """Run the discriminator on a crop-sized input on the meta device (shapes only, no memory): a
    network too deep for the crop fails here, before training, not at its first step."""
    _check_discriminator_net_fits(_meta_discriminator(dcfg), dcfg, crop_size)


def generator_size_multiple(gcfg: GeneratorConfig) -> int:
    """What H and W must be divisible by for this generator (built on the meta device: no memory)."""
    return int(getattr(_meta_generator(gcfg), "size_multiple", 1))
