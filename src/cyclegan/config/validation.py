"""The one place a config is checked. Each part checks its own keys: a generator or discriminator
through the options class registered beside it (``networks.options``), a model kind through its
declaration in ``config.kinds``; this module runs them, checks the sections every kind reads, refuses
keys that the chosen kind or network would ignore (``refuse_unused``), and measures the networks' size
and fit to the crop on the meta device before anything is allocated."""

from __future__ import annotations

import dataclasses
import math

import torch

from cyclegan.config.kinds import (
    ACTIVE_WHEN,
    ADAPTIVE_WEIGHTING,
    DISTILL_REAL,
    EDGE_PROMOTE_DIRECTIONS,
    KIND_SECTIONS,
    KINDS,
    MODEL_KINDS,
)
from cyclegan.config.schema import (
    COMPILE_MODES,
    INITS,
    LR_SCALING,
    NETWORK_NAMES,
    PREPROCESS,
    Config,
    DiscriminatorConfig,
    GeneratorConfig,
    ModelConfig,
    dotted,
)
from cyclegan.devices import DEVICES, PRECISIONS
from cyclegan.diffaug import POLICIES, parse_policy
from cyclegan.errors import ConfigError, first_line, short_repr
from cyclegan.losses import GAN_LOSSES
from cyclegan.networks import DISCRIMINATORS, GENERATORS
from cyclegan.networks.options import (
    MAX_DISCRIMINATOR_LAYERS,
    MAX_RESIDUAL_BLOCKS,
    option_names,
    read_options,
)
from cyclegan.networks.options import (
    require_at_least as _at_least,
)
from cyclegan.networks.options import (
    require_choice as _choice,
)
from cyclegan.networks.options import (
    require_fraction as _fraction,
)
from cyclegan.resolution import parse_schedule
from cyclegan.schedules import LR_POLICIES

__all__ = ["MAX_DISCRIMINATOR_LAYERS", "MAX_RESIDUAL_BLOCKS"]  # re-exported from cyclegan.config

# One network's weights (parameters and buffers) may take at most 4 GiB in fp32. The paper's networks
# have 11.4M (ResNet-9 generator, 45 MB) and 2.8M parameters (70x70 PatchGAN); training holds four
# networks, each with a gradient and Adam's two moments, so 4 GiB apiece is already 64 GiB of state
# before a single activation, past one 80 GB accelerator. Beyond it a config is a typo or a damaged
# config.json (ngf 131072 asked torch for 190 TB), refused before anything is allocated.
MAX_NETWORK_BYTES = 4 << 30
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


def validate(cfg: Config) -> None:
    """Every range, closed-set, cross-field and registry-name check, so an invalid run fails before any
    work. Keys a kind or network would ignore are refused separately (``refuse_unused``): an old
    config.json that carries one still loads."""
    # First, so a non-finite value is reported under its own key, not as another key's range error
    # (optim.lr nan used to fail as "optim.eta_min: must be in [0, nan]").
    _check_all_finite(cfg)
    generator = _check_model(cfg)
    _check_data(cfg, generator)
    _check_loss(cfg)
    _check_optim(cfg)
    _check_train(cfg, generator)
    _check_distill(cfg)
    KINDS[cfg.model.kind].check(cfg, generator)


def _check_part(key: str, section, registry) -> None:
    """The section's name against ``registry``, then the registered options' own rules."""
    _choice(f"{key}.name", section.name, registry)
    options = registry.options.get(section.name)
    if options is not None and hasattr(options, "check"):
        read_options(options, section).check(key)


def _check_model(cfg: Config) -> torch.nn.Module:
    """Both networks' options, then both built on the meta device (shapes only, no memory): their
    size and fit to the crop. Returns the meta generator for the checks that ask what it can do."""
    g, d = cfg.model.generator, cfg.model.discriminator
    _choice("model.kind", cfg.model.kind, MODEL_KINDS)
    _at_least("model.generator.ngf", g.ngf, 1)
    _check_part("model.generator", g, GENERATORS)
    _at_least("model.discriminator.ndf", d.ndf, 1)
    _check_part("model.discriminator", d, DISCRIMINATORS)
    _choice("model.init", cfg.model.init, INITS)
    gen, disc = _meta_generator(g), _meta_discriminator(d)
    _check_network_size("generator", f"model.generator.ngf {g.ngf}", _weight_count(gen),
                        "model.generator.ngf, n_blocks or vq_codebook_size")
    _check_network_size("discriminator", f"model.discriminator.ndf {d.ndf}", _weight_count(disc),
                        "model.discriminator.ndf or n_layers")
    _check_discriminator_net_fits(disc, d, cfg.data.crop_size)
    return gen


def _check_data(cfg: Config, generator: torch.nn.Module) -> None:
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
    _fraction("data.val_fraction", data.val_fraction)
    multiple = int(getattr(generator, "size_multiple", 1))
    if data.crop_size % multiple:
        raise ConfigError(
            f"data.crop_size ({data.crop_size}) must be a multiple of {multiple} for generator "
            f"{cfg.model.generator.name}"
        )


def _check_loss(cfg: Config) -> None:
    loss = cfg.loss
    _choice("loss.gan", loss.gan, GAN_LOSSES)
    for name in ("lambda_gan", "lambda_cyc", "lambda_id", "lambda_gp", "lambda_fm", "lambda_edge",
                 "lambda_color", "lambda_tone", "lambda_vq", "lambda_edge_promote", "lambda_lecam",
                 "lambda_nce"):
        _at_least(f"loss.{name}", getattr(loss, name), 0.0)
    _choice("loss.edge_promote_direction", loss.edge_promote_direction, EDGE_PROMOTE_DIRECTIONS)
    if loss.edge_smooth_dir == "":
        raise ConfigError("loss.edge_smooth_dir: empty path "
                          "(unset it to cache the smoothed copies in the run)")
    if loss.edge_smooth_dir is not None and loss.edge_promote_direction == "both":
        raise ConfigError("loss.edge_smooth_dir: one folder holds one domain's copies; with "
                          "edge_promote_direction both leave it unset (the run caches both)")
    _fraction("loss.lecam_decay", loss.lecam_decay)
    _at_least("loss.pool_size", loss.pool_size, 0)
    _at_least("loss.color_pool", loss.color_pool, 1)
    _choice("loss.adaptive_weighting", loss.adaptive_weighting, ADAPTIVE_WEIGHTING)
    _at_least("loss.nce_patches", loss.nce_patches, 1)
    _at_least("loss.nce_mlp_dim", loss.nce_mlp_dim, 1)
    if loss.nce_temperature <= 0:
        raise ConfigError(f"loss.nce_temperature: must be > 0, got {loss.nce_temperature}")


def _check_optim(cfg: Config) -> None:
    opt = cfg.optim
    _choice("optim.lr_policy", opt.lr_policy, LR_POLICIES)
    if opt.lr <= 0:
        raise ConfigError(f"optim.lr: must be > 0, got {opt.lr}")
    _fraction("optim.beta1", opt.beta1)
    _fraction("optim.beta2", opt.beta2)
    if opt.decay_epochs is not None:
        _at_least("optim.decay_epochs", opt.decay_epochs, 0)
        if opt.lr_policy == "linear" and opt.decay_epochs > cfg.train.epochs:
            raise ConfigError(f"optim.decay_epochs ({opt.decay_epochs}) must be <= train.epochs "
                              f"({cfg.train.epochs}) with lr_policy linear")
    _at_least("optim.step_epochs", opt.step_epochs, 1)
    _at_least("optim.t_0", opt.t_0, 1)
    _at_least("optim.t_mult", opt.t_mult, 1)
    if opt.d_lr_ratio <= 0:
        raise ConfigError(f"optim.d_lr_ratio: must be > 0, got {opt.d_lr_ratio}")
    if not 0.0 <= opt.eta_min <= opt.lr:
        raise ConfigError(f"optim.eta_min: must be in [0, optim.lr = {opt.lr}], got {opt.eta_min}")
    _choice("optim.lr_scaling", opt.lr_scaling, LR_SCALING)


def _check_train(cfg: Config, generator: torch.nn.Module) -> None:
    t = cfg.train
    _at_least("train.epochs", t.epochs, 1)
    _at_least("train.max_steps", t.max_steps, 0)
    _at_least("train.max_minutes", t.max_minutes, 0.0)
    _at_least("train.batch_size", t.batch_size, 1)
    _choice("train.device", t.device, DEVICES)
    _choice("train.precision", t.precision, ("auto", *PRECISIONS))  # auto: training.banner.resolve_precision
    for name in ("log_every", "save_latest_every", "save_epoch_every", "sample_every"):
        _at_least(f"train.{name}", getattr(t, name), 1)
    _at_least("train.keep_epochs", t.keep_epochs, 0)
    _at_least("train.sample_every_minutes", t.sample_every_minutes, 0.0)
    _at_least("train.final_translations", t.final_translations, 0)
    _at_least("train.d_warmup_steps", t.d_warmup_steps, 0)
    _check_resolution_schedule(cfg, generator)
    nets = [n.strip() for n in t.init_nets.split(",")]
    if any(n not in NETWORK_NAMES for n in nets) or not t.init_nets.strip():
        raise ConfigError(
            f"train.init_nets: {short_repr(t.init_nets)} is not a comma-separated list of "
            f"{', '.join(NETWORK_NAMES)}"
        )
    if t.init_from == "":
        raise ConfigError("train.init_from: empty path (unset it to start from random weights)")
    own = KINDS[cfg.model.kind].networks
    if t.init_from and (missing := [n for n in nets if n not in own]):
        raise ConfigError(f"train.init_nets: a {cfg.model.kind} model has no {', '.join(missing)} "
                          f"(it has {', '.join(own)})")
    _at_least("train.eval_every", t.eval_every, 0)
    if not 0.0 <= t.classifier_min_accuracy <= 1.0:
        raise ConfigError(
            f"train.classifier_min_accuracy: must be in [0, 1], got {t.classifier_min_accuracy}")
    _choice("train.compile_mode", t.compile_mode, COMPILE_MODES)
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
    if t.grad_checkpointing and not hasattr(generator, "checkpoint_blocks"):
        raise ConfigError(f"train.grad_checkpointing: generator {cfg.model.generator.name} does not "
                          f"support it (used by generators {', '.join(_checkpointing_generators())})")


def _check_resolution_schedule(cfg: Config, generator: torch.nn.Module) -> None:
    """Every stage's crop: smaller than data.crop_size, a size the generator takes, deep enough for
    the discriminator (the same checks as data.crop_size gets)."""
    key = "train.resolution_schedule"
    try:
        stages = parse_schedule(cfg.train.resolution_schedule)
    except ValueError as e:
        raise ConfigError(f"{key}: {short_repr(cfg.train.resolution_schedule)}: {e}") from None
    multiple = int(getattr(generator, "size_multiple", 1))
    disc = _meta_discriminator(cfg.model.discriminator)
    for stage in stages:
        if stage.size >= cfg.data.crop_size:
            raise ConfigError(f"{key}: stage size {stage.size} must be below data.crop_size "
                              f"({cfg.data.crop_size}), which the run reaches after the last stage; keep the "
                              "smaller stages, or set it to \"\" to train at data.crop_size throughout")
        if stage.size % multiple:
            raise ConfigError(f"{key}: stage size {stage.size} must be a multiple of {multiple} for "
                              f"generator {cfg.model.generator.name}")
        try:
            _check_discriminator_net_fits(disc, cfg.model.discriminator, stage.size)
        except ConfigError as e:
            raise ConfigError(f"{key}: stage size {stage.size}: {e}") from None


def _checkpointing_generators() -> list[str]:
    return [name for name in sorted(GENERATORS)
            if hasattr(_meta_generator(GeneratorConfig(name=name)), "checkpoint_blocks")]


def _check_distill(cfg: Config) -> None:
    distill_cfg = cfg.distill
    _choice("distill.direction", distill_cfg.direction, ("a2b", "b2a"))
    _choice("distill.real", distill_cfg.real, DISTILL_REAL)
    for name in ("lambda_distill", "lambda_feature"):
        _at_least(f"distill.{name}", getattr(distill_cfg, name), 0.0)
    for name in ("teacher", "teacher_sha256"):
        if getattr(distill_cfg, name) == "":
            raise ConfigError(f"distill.{name}: empty (unset it)")


# ----------------------------------------------------------------------------------------------
# Keys the chosen kind or network would ignore

# A key set to one of these turns something off: harmless where nothing reads it (``loss.lambda_cyc
# 0`` for CUT), so a preset's settings carry over to a kind that lacks the term.
_OFF = (0, False, None, "", "none")
# Keys of model.generator / model.discriminator every network reads.
_COMMON_NETWORK_KEYS = ("name", "ngf", "ndf")


def refuse_unused(cfg: Config, *, inherited: dict | None = None) -> None:
    """Refuse every key set away from its default (and not to "off") that the chosen model kind,
    generator or discriminator does not read, or that takes effect only when another key is on
    (``config.kinds.ACTIVE_WHEN``): one line naming the key and the kinds or networks that read it.
    ``build_config`` runs it for every run it builds; loading a saved config.json does not, and a key
    whose value comes unchanged from ``inherited`` (the saved config a run resumes from and the preset,
    as a tree) is kept: a run started before a key was refused still resumes, and a preset's recipe
    still applies with one part swapped (``--preset tiny --generator animeganv2``)."""
    values, defaults = dotted(cfg.to_dict()), dotted(Config().to_dict())
    kept = dotted(inherited or {})
    for key, value in values.items():
        if value == defaults[key] or value in _OFF or (key in kept and kept[key] == value):
            continue
        section, _, name = key.rpartition(".")
        users = _readers(cfg, section, name)
        if users is not None:
            who, chosen = users
            if chosen not in who:
                raise ConfigError(f"{key}: used by {section_noun(section)} {', '.join(who) or 'none'}; "
                                  f"not by {chosen}")
        if key in ACTIVE_WHEN and not ACTIVE_WHEN[key][0](cfg):
            raise ConfigError(f"{key}: takes effect only with {ACTIVE_WHEN[key][1]}")


def section_noun(section: str) -> str:
    nouns = {"model.generator": "generators", "model.discriminator": "discriminators"}
    return nouns.get(section, "model kinds")


def _readers(cfg: Config, section: str, name: str) -> tuple[list[str], str] | None:
    """(the kinds or networks that read ``section.name``, the chosen one), or None when every one does."""
    if section in ("model.generator", "model.discriminator"):
        if name in _COMMON_NETWORK_KEYS:
            return None
        registry = GENERATORS if section == "model.generator" else DISCRIMINATORS
        chosen = cfg.model.generator.name if section == "model.generator" else cfg.model.discriminator.name
        return [n for n in sorted(registry) if name in option_names(registry.options.get(n))], chosen
    if section in KIND_SECTIONS:
        key = f"{section}.{name}"
        return [k for k, kind in KINDS.items() if key in kind.options], cfg.model.kind
    return None


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
    return _on_meta(lambda: DISCRIMINATORS[dcfg.name](dcfg), "model.discriminator",
                    f"discriminator {dcfg.name}")


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
