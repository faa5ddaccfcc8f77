"""The networks of a CycleGAN run and what builds them: the four-network container, the Adam
optimiser factory, EMA copies of the generators and the warm start (``train.init_from``) from an
earlier run or checkpoint, or from any model file's generators (fine-tuning).

Naming: ``G_A`` translates A->B and ``G_B`` translates B->A; ``D_A`` judges domain-A images (real A
against G_B's fakes) and ``D_B`` judges domain-B images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from cyclegan import checkpoint as ckpt_io
from cyclegan.config import Config, GeneratorConfig
from cyclegan.ema import EMA
from cyclegan.errors import CheckpointError, ConfigError, short_repr
from cyclegan.modelfile import (
    EXPORTED_WEIGHTS,
    FOREIGN_INFO,
    TORCHSCRIPT_SUFFIXES,
    load_safetensors_file,
    model_memory_guard,
)
from cyclegan.networks import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator
from cyclegan.networks.options import option_names
from cyclegan.sources import ModelSourceError, resolve_source


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


# network name -> the direction a model file's generator must translate to start it
DIRECTION_OF = {name: direction for direction, name in ckpt_io.GENERATOR_FOR_DIRECTION.items()}
# What refuses a model file that cannot be fine-tuned, by what _model_file_kind says it is.
_NOT_TRAINABLE = {
    "onnx-import": "is an ONNX graph imported with cyclegan import onnx, which translates as given but "
                   "cannot be fine-tuned (no model.generator holds its weights)",
    "onnx": "is an ONNX model, which runs in ONNX Runtime and cannot be fine-tuned; give its run, checkpoint "
            "or safetensors export (cyclegan export --format safetensors)",
    "torchscript": "is a TorchScript file (or foreign PyTorch weights), which cannot be fine-tuned; give its "
                   "run, checkpoint or safetensors export, or convert foreign weights with cyclegan import",
}


@dataclass(frozen=True)
class InitSource:
    """Where ``train.init_from``'s weights come from: a run's or checkpoint's folder, whose files are
    named after the networks (``checkpoint``), or model files holding one generator each
    (``generator_files``: network name -> its safetensors file)."""

    checkpoint: Path | None = None
    generator_files: dict[str, Path] = field(default_factory=dict)


def init_net_names(cfg: Config) -> list[str]:
    return [n.strip() for n in cfg.train.init_nets.split(",")]


def check_init_from(cfg: Config) -> InitSource:
    """``train.init_from`` and ``train.init_nets`` checked against the run before any training work
    (and before ``--overwrite`` clears a run folder): the source resolves, holds every network named,
    and a model file's generator is the run's ``model.generator`` translating the named direction.
    Raises ConfigError or CheckpointError with one line."""
    spec, names = cfg.train.init_from, init_net_names(cfg)
    path = resolve_source(spec)
    kind = _model_file_kind(path)
    if kind is None:  # a run or checkpoint: every network by its name, as always
        ckpt = ckpt_io.resolve_checkpoint(path)
        held = sorted(p.stem for p in ckpt.glob("*.safetensors"))
        if missing := [n for n in names if n not in held]:
            raise ConfigError(f"train.init_nets: {spec} holds no {', '.join(missing)} (it holds "
                              f"{', '.join(held) or 'no networks'})")
        for name in names:
            _check_fits(cfg, name, ckpt / f"{name}.safetensors")
        return InitSource(checkpoint=ckpt)
    if kind in _NOT_TRAINABLE:
        raise ConfigError(f"train.init_from: {spec} {_NOT_TRAINABLE[kind]}")
    if others := [n for n in names if n not in DIRECTION_OF]:
        raise ConfigError(f"train.init_nets: {spec} is a model file, which holds generators and no "
                          f"{', '.join(others)}; name G_A and/or G_B, or give a run or checkpoint")
    return InitSource(generator_files={name: _generator_file(cfg, name) for name in names})


def _check_fits(cfg: Config, name: str, file: Path) -> None:
    """The tensors (names and shapes) of ``file`` are those of the run's network ``name``: the test
    of the strict load at the warm start, read from the file's header before any work (a refusal
    after ``--overwrite`` had cleared the run folder would lose it)."""
    section = "generator" if name.startswith("G") else "discriminator"
    part = getattr(cfg.model, section)
    registry = GENERATORS if section == "generator" else DISCRIMINATORS
    with torch.device("meta"):  # shapes only, no memory
        want = {k: tuple(v.shape) for k, v in registry[part.name](part).state_dict().items()}
    try:
        with safe_open(str(file), framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not iterable
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: corrupt weights file ({e})") from None
    if have != want:
        differ = sorted(set(have) ^ set(want)) or sorted(k for k in have if have[k] != want[k])
        raise CheckpointError(f"{file}: does not match the configured network (model.{section} of this run "
                              f"differs from the one it was trained with; first difference: {differ[0]})")


def _model_file_kind(path: Path) -> str | None:
    """What the model file at ``path`` is (safetensors, onnx-import, onnx, torchscript); None for
    anything else, which must then be a run or checkpoint."""
    if not path.exists():
        return None
    if path.is_dir():
        if (path / FOREIGN_INFO).is_file():
            return "onnx-import"
        return "safetensors" if (path / EXPORTED_WEIGHTS).is_file() else None
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".onnx":
        return "onnx"
    return "torchscript" if suffix in TORCHSCRIPT_SUFFIXES else None


def _generator_file(cfg: Config, name: str) -> Path:
    """The safetensors file of ``train.init_from`` that starts generator ``name``: its direction's
    file of a two-direction source, checked loadable, of that direction and of the run's generator."""
    spec, direction = cfg.train.init_from, DIRECTION_OF[name]
    try:
        path = resolve_source(spec, direction=direction)
    except ModelSourceError as e:  # a two-direction source without this one (it resolved for a2b)
        raise ConfigError(f"train.init_nets: {name} starts from a {direction} generator; {e}") from None
    kind = _model_file_kind(path)
    if kind != "safetensors":
        why = _NOT_TRAINABLE.get(kind, "is not a model file")
        raise ConfigError(f"train.init_from: {spec} ({direction}) {why}")
    file = path / EXPORTED_WEIGHTS if path.is_dir() else path
    with model_memory_guard(file):
        _, info = load_safetensors_file(file, torch.device("cpu"))  # metadata, hashes, every tensor
    if info.direction != direction:
        other = ckpt_io.GENERATOR_FOR_DIRECTION.get(info.direction)  # None: metadata from elsewhere
        held = f"its {info.direction} generator; name {other} instead" if other else (
            f"a generator of direction {short_repr(info.direction)}")
        raise ConfigError(f"train.init_nets: {name} starts from a {direction} generator, but {spec} holds "
                          f"only {held}")
    assert info.config is not None  # load_safetensors_file refuses a file without one
    _check_same_generator(cfg, info.config.model.generator)
    return file


def _generator_settings(g: GeneratorConfig) -> dict[str, object]:
    """What builds a generator: its name, width and the options its class reads."""
    options = option_names(GENERATORS.options.get(g.name))
    return {"name": g.name, "ngf": g.ngf, **{k: getattr(g, k) for k in options}}


def _check_same_generator(cfg: Config, source: GeneratorConfig) -> None:
    held = _generator_settings(source)
    differ = [k for k, v in held.items() if getattr(cfg.model.generator, k) != v]
    if not differ:
        return
    options = ", ".join(f"{k} {held[k]}" for k in differ if k not in ("name", "ngf"))
    raise ConfigError(
        f"train.init_from: {cfg.train.init_from} holds generator {source.name} ngf {source.ngf}"
        f"{f' ({options})' if options else ''}; set "
        f"{' and '.join(f'model.generator.{k} {held[k]}' for k in differ)}"
    )


def warm_start(models: NamedNetworks, cfg: Config) -> list[str]:
    """Copy the networks named in ``train.init_nets`` from ``train.init_from``: a run or checkpoint
    (any of its networks), or a model file (an export, an imported model, ``pretrained:``/``hf:``),
    whose A->B generator starts G_A and B->A generator G_B.

    A discriminator pre-trained on the same domains steadies the first steps on a small dataset; a
    trained generator is fine-tuned to a new style (with ``train.d_warmup_steps``, the discriminators
    catch up first). The architectures must match; no optimiser state is copied.
    """
    source = check_init_from(cfg)
    names = init_net_names(cfg)
    nets = models.networks()
    for name in names:
        if name not in nets:
            raise ConfigError(f"train.init_nets: a {cfg.model.kind} model has no {name} (it has "
                              f"{', '.join(nets)})")
        if source.checkpoint is not None:
            ckpt_io.load_into(nets[name], source.checkpoint, name)
        else:
            file = source.generator_files[name]
            ckpt_io.load_into(nets[name], file.parent, file.stem)
    return names
