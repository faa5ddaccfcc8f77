"""The models a server offers: named, loaded once at start-up, one translator per direction."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from cyclegan.config import Config
from cyclegan.errors import CycleGANError
from cyclegan.serve.errors import ServeError
from cyclegan.translate import TranslateOptions, Translator

__all__ = ["DIRECTIONS", "ServedModel", "config_summary", "load_models", "parse_model_spec"]

DIRECTIONS = ("a2b", "b2a")

# Model names travel in URLs and JSON and are shown in the page, so they are kept to a safe alphabet.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

ImageTranslator = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class ServedModel:
    """One model of the server.

    ``translators`` maps a direction (a2b | b2a) to a callable PIL image -> PIL image, normally a
    ``cyclegan.translate.Translator``; exported models carry one direction only. ``image_size`` is
    the training crop size (None when unknown), ``summary`` a few config facts for the page.
    """

    name: str
    translators: Mapping[str, ImageTranslator]
    image_size: int | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.translators) - set(DIRECTIONS))
        if unknown or not self.translators:
            raise ValueError(f"model {self.name!r}: translators must be keyed by {' / '.join(DIRECTIONS)}, "
                             f"got {sorted(self.translators) or 'none'}")

    @property
    def directions(self) -> list[str]:
        return [d for d in DIRECTIONS if d in self.translators]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "directions": self.directions,
            "image_size": self.image_size,
            "summary": dict(self.summary),
        }


def _default_name(path: Path) -> str:
    # runs/ghibli -> "ghibli"; runs/ghibli/checkpoints/latest -> "ghibli"; exports/ghibli.onnx -> "ghibli"
    p = path.resolve()
    if p.parent.name == "checkpoints":
        p = p.parent.parent
    stem = p.stem if p.is_file() else p.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")
    return name[:64] or "model"


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """``name=path`` or ``path`` (named after the run folder) -> (name, path)."""
    text = spec.strip()
    if not text:
        raise ServeError("--checkpoint: empty value; give a run folder, checkpoint or exported model")
    head, sep, tail = text.partition("=")
    # A path may itself contain "=", so only a safe name before the first "=" counts as a name.
    if sep and _NAME.fullmatch(head) and tail:
        return head, Path(tail)
    if sep and not tail:
        raise ServeError(f"--checkpoint {spec!r}: nothing after '='; expected name=path")
    return _default_name(Path(text)), Path(text)


def config_summary(cfg: Config | None) -> dict[str, Any]:
    """The config facts a user choosing a model cares about (no file paths: they stay on the server)."""
    if cfg is None:
        return {}
    g = cfg.model.generator
    summary: dict[str, Any] = {
        "preset": cfg.preset,
        "generator": g.name,
        "ngf": g.ngf,
        "norm": g.norm,
        "upsample": g.upsample,
        "gan_loss": cfg.loss.gan,
        "lambda_cyc": cfg.loss.lambda_cyc,
        "lambda_id": cfg.loss.lambda_id,
    }
    if not g.name.startswith("unet"):  # U-Nets have no residual blocks
        summary["n_blocks"] = g.n_blocks
    return summary


def load_models(
    specs: Sequence[str],
    *,
    device: str = "auto",
    precision: str = "fp32",
    tile: str | int = "auto",
    threads: int | None = None,
    echo: Callable[[str], None] = lambda message: None,
) -> dict[str, ServedModel]:
    """Load every ``--checkpoint`` spec once, both directions where the model has both.

    ``precision`` and ``tile`` are those of ``TranslateOptions``; ``threads`` also sizes ONNX Runtime
    sessions (``Translator.from_path``)."""
    if not specs:
        raise ServeError("no models: give at least one --checkpoint")
    options = TranslateOptions(precision=precision, tile=tile)  # checked once, before any model loads
    models: dict[str, ServedModel] = {}
    for spec in specs:
        name, path = parse_model_spec(spec)
        if name in models:
            raise ServeError(f"two models are named {name!r}; name them with --checkpoint NAME=PATH")
        first = Translator.from_path(path, options=options, direction=None, device=device, threads=threads)
        translators: dict[str, ImageTranslator] = {first.direction or "a2b": first}
        other = "b2a" if first.direction == "a2b" else "a2b"
        try:
            translators[other] = Translator.from_path(path, options=options, direction=other, device=device,
                                                      threads=threads)
        except CycleGANError as e:
            # Exported generators hold one direction by design; say so rather than fail the server.
            echo(f"{name}: serving {first.direction} only ({e})")
        cfg = first.config
        summary = config_summary(cfg) | {"size_multiple": first.size_multiple, "device": str(first.device),
                                         "precision": first.precision, "runtime": first.runtime.backend}
        models[name] = ServedModel(
            name=name,
            translators=translators,
            image_size=cfg.data.crop_size if cfg is not None else None,
            summary=summary,
        )
        echo(f"loaded {name}: {', '.join(models[name].directions)} on {first.device}, {first.runtime.line()}")
    return models
