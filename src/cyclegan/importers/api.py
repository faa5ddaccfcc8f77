"""``import_weights``: a foreign generator file -> a normal cyclegan model folder, written atomically and
checked.

One direction gives the folder ``cyclegan export --format safetensors`` writes (generator.safetensors,
config.json, meta.json with hashes); two (the authors' G_A and G_B) a checkpoint folder as training
writes it (G_A.safetensors, G_B.safetensors, config.json, meta.json). Either loads wherever a
checkpoint does: translate, serve, export, evaluate, video, the Python API, ``--init-from``.
meta.json also records where the weights came from (``imported``: format, file names, SHA-256).

The folder is written under a hidden temporary name beside ``out`` and checked before it is renamed
into place: each generator is rebuilt from the written files alone and must give bit-identical
outputs to the converted network on a random input. A failed import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cyclegan.checkpoint import GENERATOR_FOR_DIRECTION, file_sha256, read_meta, save_checkpoint
from cyclegan.export import export_module
from cyclegan.fileio import write_text_atomic
from cyclegan.importers.common import IMPORT_FORMATS, Converted, ForeignWeightsError
from cyclegan.modelfile import ModelInfo, load_any_generator

PROVENANCE_KEY = "imported"  # meta.json: {"format", "architecture", "sources": [{"file", "sha256"}], ...}
# What a folder may hold for --overwrite to replace it: one of our model folders, nothing of the user's.
MODEL_FOLDER_FILES = frozenset({"config.json", "meta.json", "state.pt", "foreign.json"})


@dataclass(frozen=True)
class ImportResult:
    path: Path  # the model folder written
    format: str  # the import format ("official", "cut", "animeganv2")
    directions: tuple[str, ...]  # ("a2b",), ("b2a",) or ("a2b", "b2a")
    # e.g. "official ResNet generator with 9 blocks, ngf 64, instance norm (11,378,179 parameters)"
    architecture: str
    max_abs_diff: float  # written-and-rebuilt vs converted generator on a random input; 0 when it passed
    dropped: int = 0  # tensors discarded as the original loader discards them
    folder: str = ""  # what was written, where not our weights (Converted.folder)
    note: str = ""  # the format's own remark (Converted.note), appended to the line

    def line(self) -> str:
        what = self.folder or ("checkpoint" if len(self.directions) > 1 else "safetensors export")
        text = (f"imported {self.architecture}, {' and '.join(self.directions)}, as a {what} into "
                f"{self.path}; rebuilt from the written files: max abs diff {self.max_abs_diff:g}")
        if self.dropped:
            text += (f"; dropped {self.dropped} InstanceNorm running statistics (pre-0.4 files), as the "
                     "authors' loader does")
        if self.note:
            text += f"; {self.note}"
        return text


def import_weights(fmt: str, paths: Sequence[str | Path], out: str | Path, *, overwrite: bool = False,
                   options: object | None = None) -> ImportResult:
    """Convert the generator file(s) ``paths`` of import format ``fmt`` into the model folder ``out``.

    The architecture is inferred from the tensors' names and shapes and every tensor must fit it;
    ``out`` must not exist unless ``overwrite`` (and then must be a cyclegan model folder).
    ``options``: the typed options object a format declared (``IMPORT_FORMATS.options[fmt]``, e.g.
    ``OnnxImportOptions`` for onnx); formats without options take none.
    Raises ForeignWeightsError (a CheckpointError) with one line on any problem.
    """
    if fmt not in IMPORT_FORMATS:
        raise ForeignWeightsError(f"import format {fmt!r}: choose from {', '.join(sorted(IMPORT_FORMATS))}")
    sources = [Path(p) for p in paths]
    if not sources:
        raise ForeignWeightsError(f"cyclegan import {fmt}: no file given")
    dest = Path(out)
    _check_destination(dest, sources, overwrite)
    converted = IMPORT_FORMATS[fmt](sources, **_format_options(fmt, options))
    provenance = {
        "format": fmt,
        "architecture": converted.architecture,
        "sources": [{"file": p.name, "sha256": file_sha256(p)} for p in (converted.sources or sources)],
        "directions": sorted(converted.generators),
        "dropped_tensors": converted.dropped,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.import-{uuid.uuid4().hex[:12]}"
    try:
        _write(converted, tmp, provenance)
        diff = _verify(tmp, converted, dest)
        _replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(path=dest, format=fmt, directions=tuple(sorted(converted.generators)),
                        architecture=converted.architecture, max_abs_diff=diff, dropped=converted.dropped,
                        folder=converted.folder, note=converted.note)


def _format_options(fmt: str, options: object | None) -> dict:
    """``options=`` for a format that declared a type for them; nothing for one that did not."""
    wanted = IMPORT_FORMATS.options.get(fmt)
    if wanted is None:
        if options is not None:
            raise ForeignWeightsError(f"import format {fmt} takes no options")
        return {}
    if not isinstance(options, wanted):
        raise ForeignWeightsError(f"import format {fmt} needs its options ({wanted.__name__}), got "
                                  f"{type(options).__name__}")
    return {"options": options}


def _is_model_file(path: Path) -> bool:
    return path.is_file() and (path.name in MODEL_FOLDER_FILES or path.suffix in (".safetensors", ".onnx"))


def _check_destination(dest: Path, sources: Sequence[Path], overwrite: bool) -> None:
    target = dest.resolve()
    for src in sources:
        resolved = src.resolve()
        if resolved == target or target in resolved.parents:
            raise ForeignWeightsError(f"{dest}: holds {src.name}, the file being imported; choose another "
                                      "--out")
    if not dest.exists() and not dest.is_symlink():
        return
    if not overwrite:
        raise ForeignWeightsError(f"{dest}: already exists; pass --overwrite to replace it")
    if not dest.is_dir() or not all(_is_model_file(p) for p in dest.iterdir()):
        raise ForeignWeightsError(
            f"{dest}: exists and is not a cyclegan model folder; refusing to replace it")


def _write(converted: Converted, tmp: Path, provenance: dict) -> None:
    if converted.write is not None:
        converted.write(tmp, provenance)
        return
    gens = converted.generators
    if len(gens) == 1:
        ((direction, net),) = gens.items()
        info = ModelInfo(direction=direction, size_multiple=int(net.size_multiple), config=converted.config)
        export_module(net, fmt="safetensors", out=tmp, info=info)
        # Beside the hashes export_module recorded; meta.json is not itself hashed, so this keeps them valid.
        meta = read_meta(tmp)
        meta[PROVENANCE_KEY] = provenance
        write_text_atomic(tmp / "meta.json", json.dumps(meta, indent=2))
    else:
        networks = {GENERATOR_FOR_DIRECTION[d]: net for d, net in gens.items()}
        save_checkpoint(tmp, config=converted.config, networks=networks, meta={PROVENANCE_KEY: provenance})


def _verify(folder: Path, converted: Converted, dest: Path) -> float:
    """Rebuild every generator from ``folder`` alone and compare it with the converted one."""
    worst = 0.0
    for direction, net in converted.generators.items():
        rebuilt = load_any_generator(folder, direction=direction, device="cpu", ema=False).model
        m = int(net.size_multiple)
        side = m * -(-48 // m)  # at least 48 px, one multiple wider than high
        # [1, 3, H, W]
        x = torch.rand(1, 3, side, side + m, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.inference_mode():
            expected, got = net(x), rebuilt(x)
        diff = float((expected - got).abs().max())
        if not torch.equal(expected, got):
            raise ForeignWeightsError(f"{dest}: the written {direction} generator differs from the converted "
                                      f"one (max abs diff {diff:.3g}); nothing was written")
        worst = max(worst, diff)
    return worst


def _replace(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an existing ``dest`` (checked replaceable) is set aside first and removed
    last."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:12]}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
