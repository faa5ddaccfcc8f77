"""What every importer shares: reading a foreign weights file safely, and moving its tensors into one of
our networks by an explicit, checked plan.

A format module reads the file's tensors (``read_state_dict``), infers the architecture from their
names and shapes, and describes what the file must then hold as a ``Layout``: one ``Slot`` per entry
of our network's ``state_dict`` (in its order), plus the entries it may drop (statistics the original
code discards on load) and fixed buffers whose values are checked (CUT's blur filters).
``load_layout`` then fills the network: every foreign tensor is used exactly once with exactly the
expected shape, or the import stops with one line saying what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from cyclegan.config import Config
from cyclegan.errors import CheckpointError
from cyclegan.registry import Registry
from cyclegan.torchfile import UnsafeFileError, load_weights_only

# name -> convert(paths) -> Converted; the keys are the formats ``cyclegan import`` accepts.
IMPORT_FORMATS = Registry("import format")

# nn.DataParallel saves every key under this prefix.
DATA_PARALLEL_PREFIX = "module."


class ForeignWeightsError(CheckpointError):
    """A file to import is unreadable, holds more than tensors, or matches no known layout."""


@dataclass
class Converted:
    """A format's result: generators holding the imported weights and the config that rebuilds them."""

    config: Config | None  # None: the generator is not one of ours (format onnx)
    generators: dict[str, nn.Module]  # direction ("a2b" | "b2a") -> network in eval mode
    architecture: str  # one line, e.g. "ResNet generator, 9 blocks, ngf 64, instance norm"
    dropped: int = 0  # tensors discarded as the original loader discards them
    # the files read, where they are not the paths given (a TF checkpoint prefix names .index + .data)
    sources: tuple[Path, ...] = ()
    # A format whose folder is not our weights (a foreign ONNX graph) writes it itself:
    # write(folder, provenance) creates ``folder``; ``folder`` and ``note`` then describe it in the result
    # line.
    write: Callable[[Path, dict], None] | None = None
    folder: str = ""
    note: str = ""


# ------------------------------------------------------------------------------------------------ reading

def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a PyTorch state-dict file, read with ``torch.load(weights_only=True)``.

    Only a flat mapping of names to tensors is accepted: pickled code, modules or optimiser states
    are refused before anything of them runs, and so is a zip archive whose members would inflate
    far beyond the file's size (``torchfile.load_weights_only``). A ``module.`` prefix on every key
    (a network saved inside nn.DataParallel) is removed.
    """
    path = Path(path)
    if not path.exists():
        raise ForeignWeightsError(f"{path}: no such file")
    if not path.is_file():
        raise ForeignWeightsError(f"{path}: not a file; give the weights file itself (e.g. latest_net_G.pth)")
    try:
        obj = load_weights_only(path, what="PyTorch weights file")
    except UnsafeFileError as e:
        raise ForeignWeightsError(f"{path}: {e.reason}") from None
    except OSError as e:
        raise ForeignWeightsError(f"{path}: unreadable ({e.strerror or type(e).__name__})") from None
    if not isinstance(obj, Mapping):
        raise ForeignWeightsError(f"{path}: expected a state dict (tensor names -> tensors), found a "
                                  f"{type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ForeignWeightsError(
                f"{path}: expected a state dict of tensors, but entry {key!r} holds a {type(value).__name__}"
                + (" (weights nested inside a larger checkpoint are not read)" if isinstance(value, Mapping)
                   else "")
            )
    if not obj:
        raise ForeignWeightsError(f"{path}: holds no tensors")
    tensors = dict(obj)
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in tensors):
        tensors = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in tensors.items()}
    return tensors


def guess_format(tensors: Mapping[str, Tensor]) -> str | None:
    """Which import format a file's key names look like (for hints in errors); None if none."""
    if any(k.startswith("block_a.") for k in tensors):
        return "animeganv2"
    if any(k.startswith("model.") and k.endswith(".filt") for k in tensors):
        return "cut"
    if "model.1.weight" in tensors or "model.model.0.weight" in tensors:
        return "official"
    return None


def found_summary(tensors: Mapping[str, Tensor], limit: int = 3) -> str:
    """'26 tensors: model.1.weight [64, 3, 7, 7], model.1.bias [64], ...' for error messages."""
    items = [f"{k} {list(v.shape)}" for k, v in list(tensors.items())[:limit]]
    more = ", ..." if len(tensors) > limit else ""
    return f"{len(tensors)} tensor{'s' if len(tensors) != 1 else ''}: {', '.join(items)}{more}"


def no_layout(path: Path, fmt: str, expected: str, tensors: Mapping[str, Tensor]) -> ForeignWeightsError:
    """The one-line error for a file that matches none of a format's layouts."""
    hint = ""
    if (guess := guess_format(tensors)) is not None and guess != fmt:
        hint = f"; it looks like a file for format {guess} (cyclegan import {guess} ...)"
    return ForeignWeightsError(f"{path}: not a generator of import format {fmt}: expected {expected}; found "
                               f"{found_summary(tensors)}{hint}")


# ------------------------------------------------------------------------------------------------ layouts


@dataclass(frozen=True)
class Slot:
    """Where one entry of our state dict comes from.

    ``key``: the foreign tensor's name; None when the layout stores nothing there and ``default``
    fills it (a conv the original built without bias, before a layer that needs none). With a key,
    ``default`` makes the tensor optional (BatchNorm's num_batches_tracked, absent before PyTorch 0.4.1).
    """

    key: str | None
    default: float | None = None


@dataclass
class Layout:
    """What a foreign file must hold for one inferred architecture."""

    description: str  # e.g. "ResNet generator with 9 blocks, ngf 64, instance norm"
    slots: list[Slot] = field(default_factory=list)  # in the order of our network's state_dict
    droppable: set[str] = field(default_factory=set)  # accepted and discarded
    constants: dict[str, Tensor] = field(default_factory=dict)  # fixed buffers, checked and not stored

    def tensor(self, key: str, *, default: float | None = None) -> None:
        self.slots.append(Slot(key, default))

    def conv(self, prefix: str, *, bias: str) -> None:
        """A conv's weight and bias; ``bias``: "stored" (in the file), "zero" (the original has none,
        ours has one: filled with zeros, the same function) or "absent" (neither has one)."""
        self.tensor(f"{prefix}.weight")
        if bias == "stored":
            self.tensor(f"{prefix}.bias")
        elif bias == "zero":
            self.slots.append(Slot(None, 0.0))

    def norm(self, prefix: str, kind: str) -> None:
        """The state of a norm layer of ``kind`` (batch | instance | none | group)."""
        if kind in ("batch", "group"):
            self.tensor(f"{prefix}.weight")
            self.tensor(f"{prefix}.bias")
        if kind == "batch":
            self.tensor(f"{prefix}.running_mean")
            self.tensor(f"{prefix}.running_var")
            self.tensor(f"{prefix}.num_batches_tracked", default=0)
        elif kind == "instance":
            # InstanceNorm kept running statistics before PyTorch 0.4 (and with track_running_stats);
            # the authors' loader drops them, and so do we: instance norm uses each image's own.
            self.droppable |= {f"{prefix}.running_mean", f"{prefix}.running_var",
                               f"{prefix}.num_batches_tracked"}


def detect_norm(tensors: Mapping[str, Tensor], prefix: str, conv_prefix: str) -> str | None:
    """batch | instance | none from the entries of the norm layer at ``prefix`` and whether the conv
    before it has a bias (the authors' code gives convs a bias exactly when the norm is instance
    norm, which has no learned parameters); None when the entries fit no norm layer."""
    names = {k[len(prefix) + 1:] for k in tensors if k.startswith(prefix + ".")}
    if {"weight", "bias", "running_mean", "running_var"} <= names <= {
            "weight", "bias", "running_mean", "running_var", "num_batches_tracked"}:
        return "batch"
    if names <= {"running_mean", "running_var", "num_batches_tracked"}:
        return "instance" if f"{conv_prefix}.bias" in tensors else "none"
    return None


def bias_mode(norm: str) -> str:
    """How a conv before a norm of this kind stores its bias, in the authors' code vs ours
    (``networks.blocks.uses_bias``: no bias before batch norm only)."""
    return {"instance": "stored", "batch": "absent", "none": "zero"}[norm]


def check_layout(tensors: Mapping[str, Tensor], layout: Layout, ours: Mapping[str, Tensor], *,
                 path: Path) -> None:
    """Check ``tensors`` against ``layout`` and our network's state dict ``ours`` (which may live on the
    meta device: only names, shapes and dtypes are read), each failure one line naming ``path``.

    In order, so that nothing large is made before the cheap checks pass: no tensor missing, none left
    over, every shape equal to ours; then the sizes: the tensors may declare no more bytes than the
    file stores (a tensor is a view of its storage, so a tiny storage with stride 0 can declare
    gigabytes); then every value finite in our dtype, and every fixed buffer the expected filter.
    """
    keys = [s.key for s in layout.slots if s.key is not None]
    if len(layout.slots) != len(ours) or len(set(keys)) != len(keys):  # a layout that disagrees with our code
        raise RuntimeError(f"importer bug: {layout.description}: {len(layout.slots)} slots for {len(ours)} "
                           "entries, or a foreign tensor used twice")
    needed = [s.key for s in layout.slots if s.key is not None and s.default is None] + list(layout.constants)
    if missing := [k for k in needed if k not in tensors]:
        raise ForeignWeightsError(f"{path}: does not match the inferred {layout.description}: tensor "
                                  f"{missing[0]} is missing"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    known = set(keys) | set(layout.constants) | layout.droppable
    if extra := [k for k in tensors if k not in known]:
        raise ForeignWeightsError(f"{path}: does not match the inferred {layout.description}: unexpected "
                                  f"tensor {extra[0]} {list(tensors[extra[0]].shape)}"
                                  + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    used = {slot.key: target for slot, target in zip(layout.slots, ours.values())
            if slot.key is not None and slot.key in tensors}
    for key, target in used.items():
        _check_kind(tensors[key], target, key, layout, path)
    for key, expected in layout.constants.items():
        if tuple(tensors[key].shape) != tuple(expected.shape):
            raise ForeignWeightsError(f"{path}: {key} has shape {list(tensors[key].shape)}, expected "
                                      f"{list(expected.shape)} for the inferred {layout.description}")
    _check_stored_size(tensors, [*used, *layout.constants], path)
    for key, target in used.items():
        if target.is_floating_point() and not bool(torch.isfinite(tensors[key].to(target.dtype)).all()):
            raise ForeignWeightsError(f"{path}: tensor {key} holds values that are not finite as "
                                      f"{_dtype(target)} (NaN, inf, or beyond {_dtype(target)}'s range)")
    for key, expected in layout.constants.items():
        if not torch.allclose(tensors[key].double(), expected.double(), rtol=0, atol=1e-6):
            raise ForeignWeightsError(f"{path}: {key} is not the binomial blur filter of the inferred "
                                      f"{layout.description}")


def load_layout(net: nn.Module, tensors: Mapping[str, Tensor], layout: Layout, *, path: Path) -> int:
    """Fill ``net`` from ``tensors`` by ``layout`` after ``check_layout``; returns how many tensors were
    dropped."""
    ours = net.state_dict()
    check_layout(tensors, layout, ours, path=path)
    state: dict[str, Tensor] = {}
    for (name, target), slot in zip(ours.items(), layout.slots):
        if slot.key is None or slot.key not in tensors:
            state[name] = torch.full_like(target, float(slot.default))
        else:
            state[name] = tensors[slot.key].detach().to(dtype=target.dtype).contiguous().clone()
    net.load_state_dict(state, strict=True)
    return sum(1 for k in tensors if k in layout.droppable)


def _dtype(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _check_kind(tensor: Tensor, target: Tensor, key: str, layout: Layout, path: Path) -> None:
    if tuple(tensor.shape) != tuple(target.shape):
        raise ForeignWeightsError(f"{path}: tensor {key} has shape {list(tensor.shape)}, expected "
                                  f"{list(target.shape)} for the inferred {layout.description}")
    if target.is_floating_point():
        if not tensor.is_floating_point():
            raise ForeignWeightsError(f"{path}: tensor {key} holds {tensor.dtype} values, expected floats")
    elif tensor.is_floating_point() or tensor.is_complex():
        raise ForeignWeightsError(f"{path}: tensor {key} holds {tensor.dtype} values, expected integers")


def _check_stored_size(tensors: Mapping[str, Tensor], keys: Sequence[str], path: Path) -> None:
    """The tensors ``keys`` may declare no more bytes than their storages hold: views that repeat one
    stored value (stride 0) or overlap would make a small file ask for gigabytes once copied."""
    declared = sum(tensors[k].numel() * tensors[k].element_size() for k in keys)
    storages = {}
    for k in keys:
        storage = tensors[k].untyped_storage()
        storages[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
    stored = sum(storages.values())
    if declared > stored:
        worst = max(keys, key=lambda k: tensors[k].numel() * tensors[k].element_size()
                    - tensors[k].untyped_storage().nbytes())
        t = tensors[worst]
        raise ForeignWeightsError(
            f"{path}: its tensors declare {declared:,} bytes but the file stores only {stored:,} (e.g. "
            f"{worst} {list(t.shape)} is a view of {t.untyped_storage().nbytes():,} stored bytes); refusing "
            "to expand it"
        )


def one_file(paths: Sequence[Path], fmt: str, what: str) -> Path:
    if len(paths) != 1:
        raise ForeignWeightsError(f"cyclegan import {fmt}: expected one file ({what}), got {len(paths)}")
    return Path(paths[0])
