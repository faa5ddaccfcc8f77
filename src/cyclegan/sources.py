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
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from cyclegan.checkpoint import is_run_dir
from cyclegan.download import cache_dir, offline_mode, offline_reason
from cyclegan.errors import CheckpointError, first_line

__all__ = [
    "CATALOG_ENV",
    "HF_PREFIX",
    "IMPORT_OPTION_TYPES",
    "PRETRAINED_PREFIX",
    "CatalogEntry",
    "CatalogFile",
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


@dataclass(frozen=True, kw_only=True)
class CatalogFile:
    """One file of a download: where it is, and what the publisher says it is (each check is optional)."""

    name: str  # plain file name in the model's source folder
    url: str
    size_bytes: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None  # the git blob id, for a file served from a git repository


@dataclass(frozen=True, kw_only=True)
class CatalogEntry:
    """One publicly released generator the ``pretrained`` command can fetch and import."""

    name: str
    task: str  # what it does, "horse photo -> zebra photo"
    family: str  # the method and who released it
    format: str  # importer: official | cut | animeganv2 | animeganv2-tf | whitebox | onnx
    url: str  # of the (first) download
    file: str  # file name of the (first) download (shared by models released in one archive)
    member: str | None  # path inside an archive download (its tail), else None
    architecture: str
    licence: str
    licence_note: str
    non_commercial: bool  # its terms (or its training data's) allow non-commercial use only
    size_bytes: int | None  # of the download, when the publisher states it
    sha256: str | None  # of the download, when the publisher states it
    homepage: str
    publisher: str = ""  # who released the weights (a person, a lab, a third party exporting them)
    styles: tuple[str, ...] = ()  # lower-case tags: ghibli, hayao, shinkai, paprika, cartoon, face, ...
    git_sha1: str | None = None  # git blob SHA-1 of the download, for a file served from a git repository
    hash_note: str = ""  # why no hash is given, where none is
    input_convention: str = ""  # what the original code feeds the network (layout, range, channels, sizes)
    # Several files imported together (a TF-1 checkpoint's .index and .data): each fetched and checked into
    # the model's source folder, then ``import_path`` (a file name or a checkpoint prefix there) is imported.
    files: tuple[CatalogFile, ...] = ()
    import_path: str | None = None
    # The importer's options (an ONNX graph's convention: layout, value_range, channels, multiple, min_side).
    import_options: dict[str, object] = field(default_factory=dict)

    def downloads(self) -> tuple[CatalogFile, ...]:
        """Every file to fetch: ``files``, or the one download the top-level fields describe."""
        if self.files:
            return self.files
        return (CatalogFile(name=self.file, url=self.url, size_bytes=self.size_bytes, sha256=self.sha256,
                            git_sha1=self.git_sha1),)

    def to_json(self) -> dict:
        """The entry as the catalog writes it (round-trips through ``load_catalog``)."""
        doc = asdict(self)
        doc["styles"] = list(self.styles)
        doc["files"] = [asdict(f) for f in self.files]
        drop = _SINGLE_FILE_FIELDS if self.files else ("files",)
        return {k: v for k, v in doc.items() if k not in drop}


# The catalog's fields and the JSON types each takes; ``None`` in a tuple means null is allowed.
_STR, _OPT_STR, _OPT_INT = (str,), (str, None), (int, None)
_REQUIRED: dict[str, tuple] = {
    "name": _STR, "task": _STR, "family": _STR, "format": _STR, "architecture": _STR, "licence": _STR,
    "licence_note": _STR, "non_commercial": (bool,), "homepage": _STR,
}
_OPTIONAL: dict[str, tuple] = {
    "url": _STR, "file": _STR, "member": _OPT_STR, "size_bytes": _OPT_INT, "sha256": _OPT_STR,
    "git_sha1": _OPT_STR, "publisher": _STR, "styles": (list,), "hash_note": _STR, "input_convention": _STR,
    "files": (list,), "import_path": _OPT_STR, "import_options": (dict,),
}
# Top-level fields that describe the one download of an entry without a files list.
_SINGLE_FILE_FIELDS = ("url", "file", "member", "size_bytes", "sha256", "git_sha1")
_FILE_FIELDS: dict[str, tuple] = {"name": _STR, "url": _STR, "size_bytes": _OPT_INT, "sha256": _OPT_STR,
                                  "git_sha1": _OPT_STR}
# Importer keyword arguments a catalog may set, and their JSON types (the importer checks the values).
IMPORT_OPTION_TYPES: dict[str, tuple] = {
    "layout": _STR, "value_range": _STR, "channels": _STR, "multiple": (int,), "min_side": (int,),
    "convert": (bool,),
}
_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "an object", None: "null"}


def _has_type(value: object, kinds: tuple) -> bool:
    for kind in kinds:
        if kind is None:
            ok = value is None
        elif isinstance(value, bool):  # JSON true is no integer
            ok = kind is bool
        else:
            ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if ok:
            return True
    return False


def _kind_of(value: object) -> str:
    return "null" if value is None else _JSON_NAMES.get(type(value), type(value).__name__)


def _typed(doc: dict, specs: dict[str, tuple], where: str) -> None:
    for key, kinds in specs.items():
        if key in doc and not _has_type(doc[key], kinds):
            want = " or ".join(_JSON_NAMES[k] for k in kinds)
            raise ModelSourceError(f"{where}: {key} must be {want}, not {_kind_of(doc[key])} "
                                   f"({doc[key]!r:.40})")


def _hex(value: str | None, digits: int, key: str, where: str) -> str | None:
    if value is not None and not re.fullmatch(f"[0-9a-fA-F]{{{digits}}}", value):
        raise ModelSourceError(f"{where}: {key} must be {digits} hex digits or null")
    return value.lower() if value else None


def _plain_name(value: str, key: str, where: str) -> str:
    if not value or "/" in value or "\\" in value or value.startswith(".") or "\0" in value:
        raise ModelSourceError(f"{where}: {key} must be a plain file name, not {value!r:.60}")
    return value


def _url(value: str, where: str, key: str = "url") -> str:
    if not value.startswith(("http://", "https://")):
        raise ModelSourceError(f"{where}: {key} must be http(s), not {value!r:.60}")
    return value


def _size(value: int | None, where: str, key: str = "size_bytes") -> int | None:
    if value is not None and value <= 0:
        raise ModelSourceError(f"{where}: {key} must be a positive integer or null")
    return value


def _file(doc: object, where: str) -> CatalogFile:
    if not isinstance(doc, dict):
        raise ModelSourceError(f"{where}: must be an object, not {_kind_of(doc)}")
    if missing := sorted({"name", "url"} - set(doc)):
        raise ModelSourceError(f"{where}: lacks {', '.join(missing)}")
    if unknown := sorted(set(doc) - set(_FILE_FIELDS)):
        raise ModelSourceError(f"{where}: unknown keys {', '.join(unknown)}")
    _typed(doc, _FILE_FIELDS, where)
    return CatalogFile(name=_plain_name(doc["name"], "name", where), url=_url(doc["url"], where),
                       size_bytes=_size(doc.get("size_bytes"), where),
                       sha256=_hex(doc.get("sha256"), 64, "sha256", where),
                       git_sha1=_hex(doc.get("git_sha1"), 40, "git_sha1", where))


def _import_options(doc: dict, where: str) -> dict[str, object]:
    for key, value in doc.items():
        if key not in IMPORT_OPTION_TYPES:
            raise ModelSourceError(f"{where}: import_options has unknown key {key!r:.40} "
                                   f"(known: {', '.join(IMPORT_OPTION_TYPES)})")
        _typed({key: value}, {key: IMPORT_OPTION_TYPES[key]}, f"{where}: import_options")
    return dict(doc)


def _entry(doc: object, where: str) -> CatalogEntry:
    """One catalog model, every field checked for its JSON type: a wrong one is one line naming
    the catalog file, the model and the field (user catalogs are edited by hand)."""
    if not isinstance(doc, dict):
        raise ModelSourceError(f"{where}: a catalog model must be a JSON object, not {_kind_of(doc)}")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelSourceError(f"{where}: invalid model name {name!r:.60} (letters, digits, _ . -)")
    at = f"{where}: model {name}"
    if missing := sorted(set(_REQUIRED) - set(doc)):
        raise ModelSourceError(f"{at} lacks {', '.join(missing)}")
    if unknown := sorted(set(doc) - set(_REQUIRED) - set(_OPTIONAL)):
        raise ModelSourceError(f"{at} has unknown keys {', '.join(unknown)}")
    _typed(doc, _REQUIRED | _OPTIONAL, at)
    files = tuple(_file(f, f"{at}: files[{i}]") for i, f in enumerate(doc.get("files", [])))
    if not files and not ("url" in doc and "file" in doc):
        raise ModelSourceError(f"{at} lacks url and file (or a files list)")
    if files and any(k in doc for k in _SINGLE_FILE_FIELDS):
        raise ModelSourceError(f"{at}: give either files or url/file/member/size_bytes/sha256/git_sha1, not "
                               "both")
    if len({f.name for f in files}) != len(files):
        raise ModelSourceError(f"{at}: files has two entries of the same name")
    styles = doc.get("styles", [])
    if not all(isinstance(t, str) and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", t) for t in styles):
        raise ModelSourceError(f"{at}: styles must be a list of lower-case tags (letters, digits, -)")
    import_path = doc.get("import_path")
    if import_path is not None:
        _plain_name(import_path, "import_path", at)
    first = files[0] if files else None
    member = doc.get("member")
    if member is not None and (not member.strip("/") or ".." in member.split("/")):
        raise ModelSourceError(f"{at}: member must be a path inside the archive")
    return CatalogEntry(
        name=name, task=doc["task"], family=doc["family"], format=doc["format"],
        url=_url(first.url if first else doc["url"], at),
                        file=first.name if first else _plain_name(doc["file"], "file", at),
        member=member, architecture=doc["architecture"], licence=doc["licence"],
                        licence_note=doc["licence_note"],
        non_commercial=doc["non_commercial"], size_bytes=_size(doc.get("size_bytes"), at),
        sha256=_hex(doc.get("sha256"), 64, "sha256", at), homepage=doc["homepage"],
        publisher=doc.get("publisher", ""), styles=tuple(styles),
                        git_sha1=_hex(doc.get("git_sha1"), 40, "git_sha1", at),
        hash_note=doc.get("hash_note", ""), input_convention=doc.get("input_convention", ""), files=files,
        import_path=import_path, import_options=_import_options(doc.get("import_options", {}), at),
    )


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
    if entry.files:
        what = " and ".join(f.url for f in entry.downloads()) + " into one folder"
        target = entry.import_path or entry.file
    else:
        what = f"{entry.url}, take {entry.member} out of it," if entry.member else entry.url
        target = "FILE"
    raise ModelSourceError(
        f"pretrained model {name} is not downloaded: run `cyclegan pretrained get {name}`, or download "
        f"{what} by hand and run `cyclegan import {entry.format} {target} --out {model}`"
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
