"""Re-checking the pretrained cache: each download against the catalog and against what was recorded
when it was fetched, and each imported model folder against the hashes its meta.json holds.

``catalog_problems`` serves ``get`` (a cached model is compared with a hash the catalog gained after
it was downloaded) and ``verify_model`` serves ``cyclegan pretrained verify`` (every file re-hashed).
Each problem is one line naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cyclegan.checkpoint import SHA256_KEY
from cyclegan.download import cache_dir, file_git_sha1, file_sha256
from cyclegan.pretrained.record import FileRecord, Record, RecordError, load_record, record_path
from cyclegan.sources import CatalogEntry, CatalogFile, pretrained_dir, pretrained_model_dir


@dataclass(frozen=True)
class ModelCheck:
    name: str
    problems: tuple[str, ...]  # one line each; empty when everything matched
    checked: int  # files compared

    @property
    def ok(self) -> bool:
        return not self.problems


def download_path(entry: CatalogEntry, file: CatalogFile) -> Path:
    """Where ``get`` saves a catalog file: the shared archive folder, or the model's source folder."""
    if entry.member:
        return cache_dir() / "pretrained" / "archives" / file.name
    return pretrained_dir(entry.name) / "source" / file.name


def _recorded(record: Record | None, file: CatalogFile) -> FileRecord | None:
    if record is None:
        return None
    return next((r for r in record.files if r.name == file.name), None)


def _catalog_says(file: CatalogFile, *, size: int, sha256: str, git_sha1: str | None) -> str | None:
    if file.size_bytes is not None and size != file.size_bytes:
        return f"{size} bytes, the catalog says {file.size_bytes}"
    if file.sha256 is not None and sha256 != file.sha256:
        return f"SHA-256 {sha256}, the catalog says {file.sha256}"
    if file.git_sha1 is not None and git_sha1 != file.git_sha1:
        return f"git blob SHA-1 {git_sha1}, the catalog says {file.git_sha1}"
    return None


def _file_problem(entry: CatalogEntry, file: CatalogFile, rec: FileRecord | None, *,
                  rehash: bool) -> str | None:
    path = Path(rec.path) if rec is not None else download_path(entry, file)
    if not rehash and file.size_bytes is None and file.sha256 is None and file.git_sha1 is None:
        return None  # get: nothing in the catalog to compare with (verify still re-hashes against the record)
    if rec is not None and not rehash and (file.git_sha1 is None or rec.git_sha1 is not None):
        why = _catalog_says(file, size=rec.bytes, sha256=rec.sha256, git_sha1=rec.git_sha1)
        return f"{path}: {why} (the catalog changed since it was downloaded)" if why else None
    if not path.is_file():
        return f"{path}: missing"
    sha256, git_sha1, size = file_sha256(path), file_git_sha1(path), path.stat().st_size
    if rec is not None and (sha256, size) != (rec.sha256, rec.bytes):
        return f"{path}: changed since it was downloaded (SHA-256 {sha256}, recorded {rec.sha256})"
    why = _catalog_says(file, size=size, sha256=sha256, git_sha1=git_sha1)
    return f"{path}: {why}" if why else None


def catalog_problems(entry: CatalogEntry, *, rehash: bool) -> tuple[list[str], int]:
    """Each download of ``entry`` compared with the catalog (from download.json's hashes, or the file
    re-hashed when ``rehash`` or when the record lacks it or is unusable); (problems, files compared).
    Only ``rehash`` (verify) reports a missing or damaged download.json itself."""
    problems = []
    try:
        record: Record | None = load_record(entry.name)
    except FileNotFoundError:
        record = None
        if rehash:
            problems.append(f"{record_path(entry.name)}: missing")
    except RecordError as e:  # get goes on with the files themselves; verify reports it
        record = None
        if rehash:
            problems.append(f"{e} (delete the model's folder and run `cyclegan pretrained get {entry.name}` "
                            "again)")
    files = entry.downloads()
    for file in files:
        why = _file_problem(entry, file, _recorded(record, file), rehash=rehash)
        if why is not None:
            problems.append(why)
    return problems, len(files)


# Where an imported model folder records the SHA-256 of its files: meta.json for our own weights,
# foreign.json for a foreign ONNX graph kept as it is (cyclegan.importers, format onnx).
_HASH_FILES = ("meta.json", "foreign.json")


def model_problems(model: Path) -> tuple[list[str], int]:
    """The imported model folder against the SHA-256 its meta.json (or foreign.json) recorded per file."""
    if not model.is_dir() or not any(model.iterdir()):
        return [f"{model}: missing (the import did not finish, or was deleted)"], 0
    for name in _HASH_FILES:
        if (model / name).is_file():
            index = model / name
            break
    else:
        return [f"{model}: has neither {' nor '.join(_HASH_FILES)} (not a model folder any more)"], 0
    try:
        meta = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [f"{index}: unreadable ({type(e).__name__})"], 0
    hashes = meta.get(SHA256_KEY) if isinstance(meta, dict) else None
    if not isinstance(hashes, dict) or not hashes or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        return [f"{index}: holds no file hashes to check against"], 0
    problems = []
    for file_name, expected in sorted(hashes.items()):
        path = model / file_name
        if Path(file_name).name != file_name:
            problems.append(f"{index}: names a file outside the folder ({file_name!r:.60})")
        elif not path.is_file():
            problems.append(f"{path}: missing")
        elif (digest := file_sha256(path)) != expected:
            problems.append(f"{path}: SHA-256 {digest}, {index.name} recorded {expected}")
    return problems, len(hashes)


def verify_model(entry: CatalogEntry) -> ModelCheck:
    """Re-hash everything the cache holds for ``entry``: downloads and the imported model."""
    problems, n = catalog_problems(entry, rehash=True)
    more, m = model_problems(pretrained_model_dir(entry.name))
    return ModelCheck(name=entry.name, problems=tuple(problems + more), checked=n + m)
