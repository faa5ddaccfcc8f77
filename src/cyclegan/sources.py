"""Model sources: ``pretrained:NAME`` and ``hf:OWNER/REPO[@REV]`` wherever a model path is accepted.

``resolve_source`` turns a source into a local path that the loaders (``modelfile.load_any_generator``,
``checkpoint.resolve_checkpoint``) already understand; plain paths pass through unchanged.

- ``pretrained:NAME`` is a catalog model that ``cyclegan pretrained get NAME`` downloaded and imported
  into the user cache (``<cache>/pretrained/NAME/model``). Resolving never downloads; a model that is
  not there is one line saying which file to fetch and what to run.
- ``hf:OWNER/REPO`` (optionally ``@REVISION``) is a Hugging Face Hub model repository, fetched through
  ``huggingface_hub.snapshot_download`` (the ``hub`` extra) into the Hub's own cache, so ``HF_HOME`` /
  ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` work as in every Hugging Face tool; ``CYCLEGAN_OFFLINE=1``
  too. ``cyclegan push`` writes such repositories: one direction at the top, or ``a2b/`` and ``b2a/``.

The catalog itself (``cyclegan/pretrained/catalog.json``, package data) is read here, not in the
``pretrained`` workflow, because resolving a name must not import the downloader and the importers.
``CYCLEGAN_PRETRAINED_CATALOG=FILE`` adds entries (same JSON layout) or replaces entries of the same
name, e.g. to point at an internal mirror.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

from cyclegan.checkpoint import is_run_dir
from cyclegan.download import cache_dir, offline_mode, offline_reason
from cyclegan.errors import CheckpointError, first_line

__all__ = [
    "CATALOG_ENV",
    "HF_PREFIX",
    "PRETRAINED_PREFIX",
    "CatalogEntry",
    "ModelSourceError",
    "catalog_entry",
    "is_source_spec",
    "load_catalog",
    "parse_hf_spec",
    "pretrained_dir",
    "pretrained_model_dir",
    "resolve_source",
]

PRETRAINED_PREFIX = "pretrained:"
HF_PREFIX = "hf:"
CATALOG_ENV = "CYCLEGAN_PRETRAINED_CATALOG"
DIRECTIONS = ("a2b", "b2a")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Hub repo ids: OWNER/NAME of letters, digits, "-", "_", "."; a revision is a branch, tag or commit.
_HF = re.compile(r"^([A-Za-z0-9][\w.-]{0,95})/([A-Za-z0-9][\w.-]{0,95})(?:@([\w./-]{1,200}))?$")


class ModelSourceError(CheckpointError):
    """A ``pretrained:`` or ``hf:`` source that cannot be resolved to a local model."""


@dataclass(frozen=True)
class CatalogEntry:
    """One publicly released generator the ``pretrained`` command can fetch and import."""

    name: str
    task: str  # what it does, "horse photo -> zebra photo"
    family: str  # the method and who released it
    format: str  # importer: official | cut | animeganv2
    url: str
    file: str  # file name of the download (shared by models released in one archive)
    member: str | None  # path inside an archive download (its tail), else None
    architecture: str
    licence: str
    licence_note: str
    non_commercial: bool  # its terms (or its training data's) allow non-commercial use only
    size_bytes: int | None  # of the download, when the publisher states it
    sha256: str | None  # of the download, when the publisher states it
    homepage: str


_FIELDS = {f.name for f in fields(CatalogEntry)}
_OPTIONAL = {"member", "size_bytes", "sha256"}


def _entry(doc: object, where: str) -> CatalogEntry:
    if not isinstance(doc, dict):
        raise ModelSourceError(f"{where}: a catalog model must be a JSON object")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelSourceError(f"{where}: invalid model name {name!r} (letters, digits, _ . -)")
    if missing := sorted(_FIELDS - _OPTIONAL - set(doc)):
        raise ModelSourceError(f"{where}: model {name} lacks {', '.join(missing)}")
    if unknown := sorted(set(doc) - _FIELDS):
        raise ModelSourceError(f"{where}: model {name} has unknown keys {', '.join(unknown)}")
    sha = doc.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha)):
        raise ModelSourceError(f"{where}: model {name}: sha256 must be 64 hex digits or null")
    size = doc.get("size_bytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ModelSourceError(f"{where}: model {name}: size_bytes must be a positive integer or null")
    if not str(doc["url"]).startswith(("http://", "https://")):
        raise ModelSourceError(f"{where}: model {name}: url must be http(s)")
    if "/" in str(doc["file"]) or "\\" in str(doc["file"]) or str(doc["file"]).startswith("."):
        raise ModelSourceError(f"{where}: model {name}: file must be a plain file name")
    values = {k: doc.get(k) for k in _FIELDS}
    values["sha256"] = sha.lower() if sha else None
    values["non_commercial"] = bool(doc["non_commercial"])
    return CatalogEntry(**values)


def _read_catalog(text: str, where: str) -> dict[str, CatalogEntry]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ModelSourceError(f"{where}: not valid JSON ({first_line(e)})") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        raise ModelSourceError(f"{where}: expected an object with a \"models\" list")
    out: dict[str, CatalogEntry] = {}
    for item in models:
        entry = _entry(item, where)
        out[entry.name] = entry
    return out


def load_catalog() -> dict[str, CatalogEntry]:
    """Name -> entry: the shipped catalog, then ``$CYCLEGAN_PRETRAINED_CATALOG``'s entries over it."""
    shipped = resources.files("cyclegan").joinpath("pretrained", "catalog.json")
    catalog = _read_catalog(shipped.read_text(encoding="utf-8"), "cyclegan/pretrained/catalog.json")
    if extra := os.environ.get(CATALOG_ENV):
        path = Path(extra).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ModelSourceError(f"{path} ({CATALOG_ENV}): cannot read ({first_line(e)})") from None
        catalog.update(_read_catalog(text, str(path)))
    return catalog


def catalog_entry(name: str) -> CatalogEntry:
    catalog = load_catalog()
    if name in catalog:
        return catalog[name]
    close = difflib.get_close_matches(name, list(catalog), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelSourceError(f"unknown pretrained model {name!r} (see `cyclegan pretrained list`){hint}")


def pretrained_dir(name: str) -> Path:
    """``<cache>/pretrained/NAME``: ``source/`` (the downloaded weights), ``model/`` (the import),
    ``download.json`` (what was fetched, and its SHA-256)."""
    return cache_dir() / "pretrained" / name


def pretrained_model_dir(name: str) -> Path:
    return pretrained_dir(name) / "model"


def is_source_spec(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a ``pretrained:`` or ``hf:`` source (not a local path that exists)."""
    text = os.fspath(spec)
    return text.startswith((PRETRAINED_PREFIX, HF_PREFIX)) and not Path(text).exists()


def parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """``hf:OWNER/REPO[@REV]`` -> (``OWNER/REPO``, ``REV`` or None)."""
    m = _HF.match(spec.removeprefix(HF_PREFIX))
    if m is None or ".." in m.group(0):
        raise ModelSourceError(f"{spec}: expected hf:OWNER/REPO or hf:OWNER/REPO@REVISION")
    return f"{m.group(1)}/{m.group(2)}", m.group(3)


def _pick_direction(folder: Path, direction: str | None, spec: str) -> Path:
    """A two-direction model (``a2b/`` and ``b2a/`` exports) -> the folder of ``direction`` (a2b by
    default); anything else is returned unchanged for the loader to read."""
    if direction is not None and direction not in DIRECTIONS:
        raise ModelSourceError(f"direction {direction!r}: choose from a2b, b2a")
    subs = [d for d in DIRECTIONS if (folder / d).is_dir()]
    if not subs or any(folder.glob("*.safetensors")) or is_run_dir(folder):
        return folder
    want = direction or "a2b"
    if want not in subs:
        raise ModelSourceError(f"{spec}: has no {want} model (it has {', '.join(subs)})")
    return folder / want


def _pretrained(spec: str, direction: str | None) -> Path:
    name = spec.removeprefix(PRETRAINED_PREFIX)
    entry = catalog_entry(name)
    model = pretrained_model_dir(name)
    if model.is_dir() and any(model.iterdir()):
        return _pick_direction(model, direction, spec)
    what = f"{entry.url}, take {entry.member} out of it," if entry.member else entry.url
    raise ModelSourceError(
        f"pretrained model {name} is not downloaded: run `cyclegan pretrained get {name}`, or download "
        f"{what} by hand and run `cyclegan import {entry.format} FILE --out {model}`"
    )


def _hf(spec: str, direction: str | None) -> Path:
    repo_id, revision = parse_hf_spec(spec)
    try:
        import huggingface_hub  # optional: the `hub` extra
        from huggingface_hub import utils as hf_errors
    except ImportError:
        raise ModelSourceError(
            f"{spec}: Hugging Face models need huggingface_hub: pip install 'cyclegan[hub]'"
        ) from None
    offline = offline_mode()
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, local_files_only=offline, library_name="cyclegan",
        )
    except hf_errors.LocalEntryNotFoundError:
        why = f"{offline_reason()} forbids downloading it" if offline else "the Hub cannot be reached"
        raise ModelSourceError(
            f"{spec}: not in the Hugging Face cache and {why}; fetch it on a machine with internet "
            f"(`hf download {repo_id}`) and copy the cache (HF_HUB_CACHE) over"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ModelSourceError(f"{spec}: revision {revision} not found in {repo_id}") from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelSourceError(
            f"{spec}: no such model repository on the Hub (or it is private: log in or set HF_TOKEN)"
        ) from None
    except (hf_errors.HfHubHTTPError, hf_errors.HFValidationError, OSError, ValueError) as e:
        raise ModelSourceError(f"{spec}: {first_line(e)}") from None
    return _pick_direction(Path(folder), direction, spec)


def resolve_source(spec: str | os.PathLike, *, direction: str | None = None) -> Path:
    """The local path of a model source: ``pretrained:NAME``, ``hf:OWNER/REPO[@REV]`` or a plain path.

    A plain path (or one that exists on disk even if it starts with a prefix) is returned as given.
    For a two-direction model, ``direction`` (a2b by default) picks its folder.
    """
    text = os.fspath(spec)
    if not is_source_spec(text):
        return Path(spec)
    if text.startswith(PRETRAINED_PREFIX):
        return _pretrained(text, direction)
    return _hf(text, direction)
