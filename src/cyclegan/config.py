"""Typed, frozen configuration, built and validated in one place.

Precedence (later wins): dataclass defaults (the CycleGAN paper) -> preset YAML -> ``--config`` YAML
-> command-line flags and ``--set section.key=value``. The resolved config is written as
``config.json`` in every run directory and inside every checkpoint, so any artefact can rebuild its
networks without flags.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cyclegan.devices import DEVICES, PRECISIONS
from cyclegan.diffaug import POLICIES, parse_policy
from cyclegan.errors import ConfigError, first_line, short_repr

PRESET_DIR = Path(__file__).parent / "presets"

NORMS = ("instance", "batch", "none")
INITS = ("normal", "xavier", "kaiming", "orthogonal")
PREPROCESS = ("resize_and_crop", "scale_width", "scale_width_and_crop", "crop", "none")
UPSAMPLE = ("transpose", "resize")
ANTIALIAS = ("none", "down", "up", "both")
MODEL_KINDS = ("cyclegan", "cut", "fastcut", "distill")
DISTILL_REAL = ("b", "teacher")  # what the distilled student's discriminator sees as real
ADAPTIVE_WEIGHTING = ("none", "uncertainty")
EDGE_PROMOTE_DIRECTIONS = ("a", "b", "both")  # whose discriminator sees the edge-smoothed copies
NETWORK_NAMES = ("G_A", "G_B", "D_A", "D_B")

# Config files are read whole and parsed by pure-Python PyYAML: refuse anything far beyond a real
# config (the shipped presets are 1-3 KB, a config with every key set about 4 KB) before parsing.
MAX_CONFIG_BYTES = 1 << 20
# A config is at most three mappings deep (model.generator.ngf) and no value is a collection; the
# limit only needs to stop hostile nesting before Python's recursion limit (about 1000 frames).
MAX_YAML_DEPTH = 32
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


@dataclass(frozen=True)
class GeneratorConfig:
    name: str = "resnet"  # registry key: resnet | unet_128 | unet_256 | attention | animeganv2
    # animeganv2: the AnimeGANv2 generator (widths ngf/2 .. 4ngf; 64 = the original), fixed layer table
    ngf: int = 64
    n_blocks: int = 9  # residual blocks of the ResNet generator (paper: 9 at 256px, 6 at 128px)
    norm: str = "instance"
    dropout: float = 0.0  # paper's CycleGAN uses none; pix2pix-style 0.5 is an option
    upsample: str = "transpose"  # transpose (paper) | resize (nearest + conv, no checkerboard)
    # -- resnet only: anti-aliased resampling as in the CUT authors' default generator (blur pooling,
    # Zhang, ICML 2019): none | down | up | both (CUT: both); the binomial blur sizes (CUT: 3 and 4)
    antialias: str = "none"
    antialias_filter: int = 3
    antialias_up_filter: int = 4
    # -- attention generator only (seed 004 sec. 1.2.1)
    se_reduction: int = 16  # squeeze-and-excitation bottleneck: channels / se_reduction
    cbam_every: int = 2  # every k-th residual block also gets CBAM (0 = SE-only blocks)
    self_attention: bool = True  # a self-attention layer after the residual blocks
    # -- vector-quantised bottleneck between encoder and residual blocks (seed 004 sec. 2.2.1)
    vq_codebook_size: int = 0  # number of codes; 0 = no quantisation
    vq_dim: int = 64  # code dimension (1x1 convs project to and from it)
    vq_ema_decay: float = 0.99  # EMA codebook updates; 0 = learn the codebook by gradient instead


@dataclass(frozen=True)
class DiscriminatorConfig:
    name: str = "patch"  # registry key: patch | pixel | dual | vanilla_cnn
    ndf: int = 64
    # patch: 3 = the 70x70 PatchGAN. dual / vanilla_cnn: channel doublings, ndf -> ndf * 2**n_layers
    # (capped at 8ndf) over n_layers + 1 stride-2 convs; 3 = seed 004's 64 -> 512, 16x16 map at 256px.
    n_layers: int = 3
    norm: str = "instance"
    # patch / pixel: spectral normalisation of every conv (Miyato et al., ICLR 2018), bounding how fast
    # D can sharpen; dual always has it
    spectral_norm: bool = False


@dataclass(frozen=True)
class ModelConfig:
    # cyclegan: two generators, two discriminators, cycle loss (Zhu et al. 2017). cut / fastcut: one
    # generator A -> B, one discriminator, PatchNCE instead of the cycle (Park et al., ECCV 2020).
    # distill: one generator A -> B (the student) trained to reproduce a trained one (see DistillConfig).
    kind: str = "cyclegan"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    init: str = "normal"
    init_gain: float = 0.02


@dataclass(frozen=True)
class DataConfig:
    dataroot: str | None = None  # folder with trainA/trainB (or trainB_<style>) and testA/testB
    data_a: str | None = None  # any folder of domain-A images (recursive); overrides dataroot
    data_b: str | None = None
    load_size: int = 286
    crop_size: int = 256
    preprocess: str = "resize_and_crop"
    flip: bool = True
    max_dataset_size: int = 0  # 0 = use every image
    num_workers: int = 4
    pin_memory: bool = True
    n_samples: int = 4  # images per domain in the fixed sample grid
    val_fraction: float = 0.0  # hold out this share of each training domain for --eval-every
    # data_a / data_b may also be .npz files of uint8 [N, H, W, 3] images (seed 002, `cyclegan prep
    # pack`); the array name inside, when the file holds several (unset: "images" or the only array).
    npz_key_a: str | None = None
    npz_key_b: str | None = None


@dataclass(frozen=True)
class LossConfig:
    gan: str = "lsgan"  # registry key: lsgan | vanilla | hinge | wgangp
    lambda_gan: float = 1.0
    lambda_cyc: float = 10.0
    lambda_id: float = 5.0  # absolute weight on the identity L1 (= paper's 0.5 x lambda_cyc); 0 disables
    lambda_gp: float = 10.0  # gradient penalty weight, used by wgangp and when gradient_penalty is on
    gradient_penalty: bool = False  # gradient penalty with any loss.gan, not only wgangp (seed 004 eq. 1.1)
    pool_size: int = 50  # 0 disables the image pool
    lambda_fm: float = 0.0  # feature matching: L1 between D's features of real and generated images
    lambda_edge: float = 0.0  # L1 between Sobel edge maps of a generator's input and output
    lambda_color: float = 0.0  # L1 between low-resolution chroma of a generator's input and output
    color_pool: int = 4  # average-pooling factor for the colour loss (blurs away texture, keeps hue)
    lambda_vq: float = 0.25  # VQ commitment weight (beta of VQ-VAE); used when the generator quantises
    # none | uncertainty: learned homoscedastic-uncertainty weights on the non-adversarial generator
    # terms (Kendall, Gal & Cipolla, CVPR 2018); the lambdas above become their initial scales.
    adaptive_weighting: str = "none"
    # -- CUT / FastCUT (model.kind cut | fastcut; Park et al. 2020, sec. 3 and appendix)
    lambda_nce: float = 1.0  # PatchNCE weight: CUT 1, FastCUT 10
    nce_idt: bool = True  # PatchNCE identity loss on B -> G(B) (CUT yes, FastCUT no)
    nce_temperature: float = 0.07
    nce_patches: int = 256  # locations sampled per layer
    nce_mlp_dim: int = 256  # width of each layer's projection MLP
    flip_equivariance: bool = False  # FastCUT: G(flip(x)) must equal flip(G(x)) in feature space
    # -- small style sets (issue 15)
    # CartoonGAN's edge-promoting loss (Chen et al., CVPR 2018): the style domain's discriminator also
    # sees edge-smoothed copies of the style images, labelled fake, so crisp outlines become part of
    # the style. 0 = off; 1 weighs the copies like generated images.
    lambda_edge_promote: float = 0.0
    edge_promote_direction: str = "b"  # b: D_B (toward domain B) | a: D_A | both; CUT/FastCUT: b only
    # Folder of smoothed copies (`cyclegan prep edge-smooth`, same relative names as the style folder);
    # unset: made once and cached in the run folder.
    edge_smooth_dir: str | None = None
    lambda_lecam: float = 0.0  # LeCam regularisation of D (Tseng et al., CVPR 2021); 0 = off
    lecam_decay: float = 0.99  # decay of the moving averages of D(real) and D(fake) it anchors to


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_policy: str = "linear"  # registry key: linear | cosine | cosine_restarts | step | constant
    # linear: the last N epochs decay linearly to 0; unset = half of train.epochs (paper: 100 + 100)
    decay_epochs: int | None = None
    step_epochs: int = 50  # step: multiply by step_gamma every N epochs
    step_gamma: float = 0.1
    # How lr grows with the global batch (batch_size x processes) relative to the paper's batch 1:
    # none (the paper's code keeps 2e-4 at any batch), sqrt (the square-root rule derived for Adam
    # by Malladi et al., NeurIPS 2022), linear (Goyal et al. 2017, derived for SGD).
    lr_scaling: str = "none"
    # The discriminators' learning rate as a multiple of the generators' at every point of the schedule:
    # two time-scale updates (TTUR, Heusel et al., NeurIPS 2017: D faster than G, e.g. 4 with lr 1e-4)
    d_lr_ratio: float = 1.0
    # cosine_restarts (SGDR, Loshchilov & Hutter 2017): cycles of t_0, t_0 * t_mult, ... epochs, each
    # annealing from lr to eta_min (seed 004: 10, 2, 1e-5)
    t_0: int = 10
    t_mult: int = 2
    eta_min: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    max_steps: int = 0  # stop after this many iterations (0 = no limit); for smoke runs
    max_minutes: float = 0.0  # stop (and save) after this much wall-clock training time (0 = no limit)
    batch_size: int = 1
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    # torch.compile mode: default | reduce-overhead (CUDA graphs: cuts per-kernel launch cost, which
    # dominates at batch 1) | max-autotune
    compile_mode: str = "default"
    log_every: int = 50  # iterations between log lines; logging is the only host sync
    save_latest_every: int = 100  # iterations between checkpoints/latest (seed 000)
    save_epoch_every: int = 5  # epochs between checkpoints/epoch_NNNN
    keep_epochs: int = 0  # keep only the last K epoch checkpoints (0 = keep all)
    # Epoch and best checkpoints also keep the training state (optimisers, pools: three quarters of the
    # paper recipe's checkpoint) only when asked; latest always has it, and resume needs only that.
    epoch_checkpoint_state: bool = False
    # Write checkpoints on a background thread: the loop waits only for the copy to host memory
    # (a synchronous write of the paper's 324 MB checkpoint took 0.6 s on the dev VM).
    async_checkpoint: bool = True
    sample_every: int = 1  # epochs between sample grids
    tensorboard: bool = True  # also log to <run>/tensorboard when the tensorboard package is installed
    eval_every: int = 0  # epochs between test-split metrics (FID/KID/IS/GMS/cycle); 0 = never
    # --eval-every also scores with the domain classifier (trained on the training images, cached;
    # cyclegan.evaluate.classifier), refused below this held-out accuracy
    eval_classifier: bool = False
    classifier_min_accuracy: float = 0.8
    inception_weights: str | None = None  # FID Inception weights file (default: torch hub cache)
    grad_checkpointing: bool = False  # recompute residual-block activations in backward (less memory)
    num_threads: int = 0  # CPU intra-op threads (0 = PyTorch's default capped at the CPUs this process may use)
    # Warm start: copy these networks' weights from an earlier run or checkpoint before the first
    # step of a new run (seed 001 sec. 5.1's "pre-trained discriminator"); ignored on --resume.
    init_from: str | None = None
    init_nets: str = "D_A,D_B"  # comma-separated subset of G_A, G_B, D_A, D_B
    # Exponential moving average of the generators' weights (StyleGAN-style); 0 = off. Samples,
    # translate and evaluate use the averaged generator when a checkpoint has one.
    ema_decay: float = 0.0
    # DiffAugment (Zhao et al. 2020) before every discriminator call: "" or a comma-separated
    # subset of color, translation, cutout.
    diffaug: str = ""


@dataclass(frozen=True)
class DistillConfig:
    """model.kind distill: the run's G_A (model.generator, the student) learns to reproduce a trained
    generator (the teacher), as in GAN Compression (Li et al., CVPR 2020, sec. 3.1): L1 to the teacher's
    output, MSE between the teacher's intermediate features and the student's through learned 1x1
    projections, and the adversarial loss (loss.lambda_gan) against D_B. The defaults are its
    horse2zebra settings (lambda_recon 10, lambda_distill 0.01)."""

    teacher: str | None = None  # run, checkpoint, safetensors export or TorchScript file (or pretrained:/hf:)
    direction: str = "a2b"  # which of the teacher's generators: a2b (G_A) or b2a (G_B)
    # SHA-256 of the teacher's weights when the run started; a resume refuses a teacher that changed since
    teacher_sha256: str | None = None
    lambda_distill: float = 10.0  # L1 between the student's and the teacher's outputs
    lambda_feature: float = 0.01  # MSE between projected student features and teacher features; 0 = off
    # b: D_B's real images are domain-B images (GAN Compression); teacher: the teacher's outputs (no B data)
    real: str = "b"
    # Start D_B from the teacher's discriminator of the target domain when it has one of model.discriminator's
    # architecture (GAN Compression sec. 3.1, "inheriting the teacher discriminator").
    inherit_discriminator: bool = True


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    preset: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        # allow_nan=False: NaN / Infinity are not JSON; validate refuses them, so this never fires
        # for a validated config, and a config that skipped validation cannot write an invalid file.
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)


# ----------------------------------------------------------------------------------------------
# Building from dicts


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/JSON/CLI value to the annotated type, or raise a ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true or false, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {short_repr(value)}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif not isinstance(value, int):
            try:
                value = int(str(value))
            except ValueError:
                raise ConfigError(f"{key}: expected an integer, got {short_repr(value)}") from None
        # Beyond 64 bits no setting means anything (torch takes int64, seeds at most 2**64 - 1), and
        # such a number could not even be printed in an error (str() stops at 4300 digits).
        if value.bit_length() > 64:
            raise ConfigError(f"{key}: {short_repr(value)} is out of range (more than 64 bits)")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {short_repr(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {short_repr(value)}") from None
        _check_finite(key, number)
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {short_repr(value)}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")


def _check_finite(key: str, number: float) -> None:
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
            _check_finite(prefix + f.name, value)


def _from_dict(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {short_repr(data)}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_), key=str)  # YAML keys may be ints as well as strings
    if unknown:
        raise ConfigError(
            f"unknown config key {_short_text(prefix + str(unknown[0]))}; valid keys here: "
            f"{', '.join(sorted(types_))}"
        )
    kwargs = {}
    for name, tp in types_.items():
        if name not in data:
            continue
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, data[name], key + ".")
        else:
            kwargs[name] = _coerce(data[name], tp, key)
    return cls(**kwargs)


def _short_text(text: str, limit: int = 80) -> str:
    """User-typed text (a key, a library's message quoting a value) cut for an error message, as
    ``short_repr`` cuts values but without adding quotes."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{_short_text(dotted)}: {_short_text(p)} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """``section.key=value`` -> (key, value); the value is parsed as YAML (so 1e-4, true, null work)."""
    if "=" not in item:
        raise ConfigError(f"--set {short_repr(item)}: expected section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {short_repr(item)}: empty key")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):
        # Not YAML we accept (a syntax error, an alias, an int past str()'s 4300 digits): the
        # literal text, which the key's type check then accepts or refuses.
        value = raw
    return key, value


class _UnsafeYAMLError(yaml.YAMLError):
    """A YAML feature a config has no use for and that costs unbounded memory or stack."""


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors, aliases and deep nesting while composing, before any
    object is built. Aliases let a few hundred bytes expand to 10**8 strings ("billion laughs"), and
    the composer recurses once per nesting level."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _UnsafeYAMLError(
                f"YAML anchors and aliases (&name, *name) are not allowed in a config "
                f"(line {event.start_mark.line + 1})"
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise _UnsafeYAMLError(
                f"nested more than {MAX_YAML_DEPTH} levels deep (line {event.start_mark.line + 1})"
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: builds plain data only


def _read_config_text(path: Path) -> str:
    """The text of a config file, refusing before parsing one larger than MAX_CONFIG_BYTES."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # bounded even for a device or a FIFO
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: more than {MAX_CONFIG_BYTES} bytes; a config file is at most 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None


# ----------------------------------------------------------------------------------------------
# Presets


def list_presets() -> dict[str, dict]:
    """Preset name -> {description, source} for every YAML file shipped in ``cyclegan/presets``."""
    out = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        doc = _read_yaml(path)
        out[path.stem] = {"description": doc.get("description", ""), "source": doc.get("source", "")}
    return out


def _read_yaml(path: Path) -> dict:
    text = _read_config_text(Path(path))
    try:
        doc = _load_yaml(text)
    except _UnsafeYAMLError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an int past str()'s 4300-digit limit
        raise ConfigError(f"{path}: invalid YAML ({_short_text(first_line(e))})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return doc


def preset_dict(name: str) -> dict:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {short_repr(name)}; choose from {', '.join(list_presets())}")
    doc = _read_yaml(path)
    return {k: v for k, v in doc.items() if k not in ("description", "source")}


# ----------------------------------------------------------------------------------------------
# The one place configs are built


def build_config(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: tuple[str, ...] | list[str] = (),
    base: dict | None = None,
) -> Config:
    """Defaults <- ``base`` (e.g. a saved run's config) <- preset <- config file <- overrides <- sets.

    ``overrides`` maps dotted keys to values from dedicated CLI flags (None values are ignored);
    ``sets`` are raw ``section.key=value`` strings from ``--set``.
    """
    tree: dict = dict(base or {})
    if preset is not None:
        tree = _deep_merge(tree, preset_dict(preset))
        tree["preset"] = preset
    if config_file is not None:
        doc = _read_yaml(Path(config_file))
        if "preset" in doc and preset is None and doc["preset"] is not None:
            tree = _deep_merge(tree, preset_dict(str(doc["preset"])))
        tree = _deep_merge(tree, {k: v for k, v in doc.items() if k not in ("description", "source")})
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    for item in sets:
        key, value = parse_set(item)
        _set_dotted(tree, key, value)
    cfg = _from_dict(Config, tree)
    validate(cfg)
    return cfg


def config_from_dict(tree: dict) -> Config:
    cfg = _from_dict(Config, tree)
    validate(cfg)
    return cfg


def load_config_json(path: str | Path) -> Config:
    if not Path(path).exists():
        raise ConfigError(f"{path}: not found")
    text = _read_config_text(Path(path))
    try:
        tree = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: hostile nesting
        raise ConfigError(f"{path}: not a readable config ({_short_text(first_line(e))})") from None
    return config_from_dict(tree)


def _choice(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {short_repr(value)} is not allowed; choose from {', '.join(sorted(allowed))}")


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {short_repr(value)}")


def _at_most(key: str, value, high) -> None:
    if value > high:
        raise ConfigError(f"{key}: must be <= {high}, got {short_repr(value)}")


def validate(cfg: Config) -> None:
    """Every cross-field and range check lives here, so an invalid run fails before any work."""
    # Registries are imported here, not at module top, so this module stays importable without torch.
    from cyclegan.losses import GAN_LOSSES
    from cyclegan.networks import DISCRIMINATORS, GENERATORS, has_distill_features
    from cyclegan.schedules import LR_POLICIES

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
    _choice("train.precision", t.precision, PRECISIONS)
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
    import torch

    with torch.device("meta"):
        try:
            return build()
        except (RuntimeError, ValueError, OverflowError) as e:  # e.g. "Storage size calculation overflowed"
            raise ConfigError(f"{key}: cannot build {what} ({_short_text(first_line(e), 120)})") from None


def _meta_generator(gcfg: GeneratorConfig):
    from cyclegan.networks import GENERATORS

    return _on_meta(lambda: GENERATORS[gcfg.name](gcfg), "model.generator", f"generator {gcfg.name}")


def _meta_discriminator(dcfg: DiscriminatorConfig):
    from cyclegan.networks import DISCRIMINATORS

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
    import torch

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


def replace(cfg, **changes):
    """``dataclasses.replace`` that accepts dotted keys: ``replace(cfg, **{"train.epochs": 3})``."""
    tree = cfg.to_dict() if isinstance(cfg, Config) else dataclasses.asdict(cfg)
    for key, value in changes.items():
        _set_dotted(tree, key, value)
    return config_from_dict(tree) if isinstance(cfg, Config) else _from_dict(type(cfg), tree)
