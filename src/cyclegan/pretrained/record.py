"""``download.json``: what ``pretrained get`` fetched for a model, read back checked by type.

The record sits beside the model in the cache (``<cache>/pretrained/NAME/download.json``) and holds,
for every downloaded file, its URL, where it was put, its size, SHA-256 and git blob SHA-1. A later
``get`` compares them with the catalog (which may have gained a hash since), and ``verify`` compares
the files on disk with them. The file may have been edited or damaged: ``load_record`` returns it
only when every field has its type, and otherwise says why in one line.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cyclegan.fileio import write_text_atomic
from cyclegan.sources import CatalogEntry, pretrained_dir
from cyclegan.version import __version__

RECORD = "download.json"


@dataclass(frozen=True, kw_only=True)
class FileRecord:
    name: str  # the catalog's file name
    url: str
    path: str  # where it was saved (the shared archive, or the model's source folder)
    bytes: int
    sha256: str
    git_sha1: str | None  # None in records written before blob ids were kept


@dataclass(frozen=True, kw_only=True)
class Record:
    name: str
    format: str
    source: str  # what was imported: a file, or a checkpoint prefix in the source folder
    files: tuple[FileRecord, ...]


class RecordError(ValueError):
    """A download.json that cannot be used; the message says why (one line)."""


def record_path(name: str) -> Path:
    return pretrained_dir(name) / RECORD


def _field(doc: dict, key: str, kind: type, where: str):
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(f"{where}: {key} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _file_record(doc: object, where: str) -> FileRecord:
    if not isinstance(doc, dict):
        raise RecordError(f"{where}: must be an object, not {type(doc).__name__}")
    return FileRecord(**{k: _field(doc, k, str, where) for k in ("name", "url", "path", "sha256")},
                      git_sha1=_field(doc, "git_sha1", str, where), bytes=_field(doc, "bytes", int, where))


def _legacy_file(doc: dict, name: str, where: str) -> FileRecord:
    """The one file a record written before ``files`` existed describes (top-level url, file, sha256,
    bytes)."""
    file = _field(doc, "file", str, where)
    member = doc.get("member")
    if member is not None and not isinstance(member, str):
        raise RecordError(f"{where}: member must be str or null, not {type(member).__name__}")
    folder = pretrained_dir(name).parent / "archives" if member else pretrained_dir(name) / "source"
    if Path(file).name != file:
        raise RecordError(f"{where}: file must be a plain file name")
    return FileRecord(name=file, url=_field(doc, "url", str, where), path=str(folder / file),
                      bytes=_field(doc, "bytes", int, where), sha256=_field(doc, "sha256", str, where),
                      git_sha1=None)


def load_record(name: str) -> Record:
    """The record of model ``name``, every field checked; ``RecordError`` (one line) when it is missing,
    unreadable, or of the wrong shape; ``FileNotFoundError`` when there is none."""
    path = record_path(name)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise RecordError(f"{path}: unreadable ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{path}: must hold an object, not {type(doc).__name__}")
    files = doc.get("files")
    if files is None:  # written by an older version: one file, described at the top level
        records = (_legacy_file(doc, name, str(path)),)
    elif not isinstance(files, list) or not files:
        raise RecordError(f"{path}: files must be a non-empty list, not {type(files).__name__}")
    else:
        records = tuple(_file_record(f, f"{path}: files[{i}]") for i, f in enumerate(files))
    return Record(name=_field(doc, "name", str, str(path)), format=_field(doc, "format", str, str(path)),
                  source=_field(doc, "source", str, str(path)), files=records)


def read_record(name: str) -> dict | None:
    """What ``get`` recorded about the download of NAME (url, sha256, bytes, files, when), or None when
    there is no usable record."""
    try:
        load_record(name)
        doc = json.loads(record_path(name).read_text(encoding="utf-8"))
    except (OSError, RecordError, ValueError):
        return None
    return doc


def write_record(entry: CatalogEntry, *, source: Path, files: list[FileRecord]) -> None:
    first = files[0]
    record = {
        "name": entry.name,
        "url": first.url,
        "file": first.name,
        "member": entry.member,
        "format": entry.format,
        "sha256": first.sha256,  # of the (first) download
        "bytes": first.bytes,
        "catalog_sha256": entry.sha256,
        "source": str(source),
        "files": [asdict(f) for f in files],
        "fetched_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cyclegan": __version__,
        "catalog": entry.to_json(),
    }
    write_text_atomic(record_path(entry.name), json.dumps(record, indent=2) + "\n")
