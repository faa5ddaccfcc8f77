"""Publicly released generators: list the catalog, download one, import it, cache it.

``get(NAME)`` downloads the catalog file (progress bar, resumed when cut, checked against the
catalog's SHA-256 when it has one) into ``<cache>/pretrained/NAME/source/``, imports it with
``cyclegan.importers`` into ``<cache>/pretrained/NAME/model/`` and records what was fetched and its
SHA-256 in ``<cache>/pretrained/NAME/download.json``. After that, ``pretrained:NAME`` works wherever a
model path does (``cyclegan.sources``). A second ``get`` finds the model and returns at once.

Models released together in one archive (the CUT authors' six) share one download, kept in
``<cache>/pretrained/archives/``; each model's file is taken out of it by name.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from cyclegan.download import ChecksumError, DownloadError, cache_dir, download
from cyclegan.errors import CycleGANError, first_line, plain_reason
from cyclegan.fileio import atomic_write, temp_sibling, write_text_atomic
from cyclegan.importers import import_weights
from cyclegan.sources import (
    CatalogEntry,
    ModelSourceError,
    catalog_entry,
    load_catalog,
    pretrained_dir,
    pretrained_model_dir,
)
from cyclegan.version import __version__

__all__ = [
    "CatalogEntry",
    "DownloadError",
    "ModelSourceError",
    "PretrainedError",
    "PretrainedModel",
    "get",
    "is_downloaded",
    "list_models",
    "read_record",
]

RECORD = "download.json"


class PretrainedError(CycleGANError):
    """A catalog model that cannot be fetched or imported (bad archive, destination in the way)."""


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    model_dir: Path  # the imported model in the cache: what pretrained:NAME resolves to
    source: Path  # the downloaded weights file (taken out of the archive for archive releases)
    sha256: str | None  # of the download, as recorded when it was fetched
    downloaded: bool  # fetched and imported by this call (False: the cache had it)
    out: Path | None  # the copy made for --out

    def line(self) -> str:
        how = "downloaded and imported" if self.downloaded else "already in the cache"
        where = f"; copied to {self.out}" if self.out is not None else ""
        return f"{self.name}: {how} at {self.model_dir}{where} (use --checkpoint pretrained:{self.name})"


def list_models() -> list[CatalogEntry]:
    """The catalog, in its order (the shipped one, then any ``CYCLEGAN_PRETRAINED_CATALOG`` additions)."""
    return list(load_catalog().values())


def is_downloaded(name: str) -> bool:
    model = pretrained_model_dir(name)
    return model.is_dir() and any(model.iterdir())


def read_record(name: str) -> dict | None:
    """What ``get`` recorded about the download of NAME (url, sha256, bytes, when), or None."""
    try:
        return json.loads((pretrained_dir(name) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def get(
    name: str,
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool | None = True,
    offline: bool | None = None,
) -> PretrainedModel:
    """Download, check and import catalog model ``name`` into the cache (once), and copy it to ``out``.

    ``overwrite`` lets ``out`` replace an earlier copy of a model there (never another folder).
    ``progress`` and ``offline`` are as in ``cyclegan.download.download``.
    """
    entry = catalog_entry(name)
    base = pretrained_dir(name)
    model = pretrained_model_dir(name)
    downloaded = False
    if is_downloaded(name):
        record = read_record(name) or {}
        source = Path(record.get("source", base / "source" / _source_name(entry)))
        sha = record.get("sha256")
    else:
        fetched = _fetch(entry, base, progress=progress, offline=offline)
        source = _extract(entry, fetched.path, base) if entry.member else fetched.path
        _import(entry, source, model)
        sha = fetched.sha256
        _write_record(entry, base, source=source, sha256=sha, size=fetched.bytes)
        downloaded = True
    copied = _copy_out(model, Path(out), overwrite=overwrite) if out is not None else None
    return PretrainedModel(name=name, model_dir=model, source=source, sha256=sha, downloaded=downloaded,
                           out=copied)


def _source_name(entry: CatalogEntry) -> str:
    return Path(entry.member).name if entry.member else entry.file


def _fetch(entry: CatalogEntry, base: Path, *, progress, offline):
    # One archive holds several models: download it once for all of them.
    dest = (cache_dir() / "pretrained" / "archives" if entry.member else base / "source") / entry.file
    result = download(entry.url, dest, sha256=entry.sha256, progress=progress, offline=offline)
    if entry.size_bytes is not None and result.bytes != entry.size_bytes:
        if result.downloaded:  # what this call fetched is wrong: keep nothing
            dest.unlink(missing_ok=True)
        raise ChecksumError(
            f"{entry.url}: {result.bytes} bytes, the catalog says {entry.size_bytes}; "
            + ("nothing was saved" if result.downloaded else f"delete {dest} to download it again")
        )
    return result


def _extract(entry: CatalogEntry, archive: Path, base: Path) -> Path:
    """Take ``entry.member`` (a path tail) out of the tar ``archive`` into ``base/source/``."""
    assert entry.member is not None
    dest = base / "source" / Path(entry.member).name
    want = entry.member.strip("/")
    try:
        with tarfile.open(archive) as tar:
            found = [m for m in tar.getmembers() if m.isfile() and (m.name == want or m.name.endswith("/" + want))]
            if not found:
                raise PretrainedError(f"{archive}: has no {want}; delete it to download {entry.url} again")
            src = tar.extractfile(found[0])
            assert src is not None  # a regular file member
            with src, atomic_write(dest) as f:
                shutil.copyfileobj(src, f, 1 << 20)
    except (tarfile.TarError, EOFError) as e:
        raise PretrainedError(f"{archive}: not a readable tar archive ({first_line(e)}); delete it and retry") from None
    except OSError as e:
        raise PretrainedError(f"{dest}: cannot write ({plain_reason(e)})") from None
    return dest


def _import(entry: CatalogEntry, source: Path, model: Path) -> None:
    """Import into a hidden sibling, then rename: ``model/`` is complete or absent."""
    tmp = temp_sibling(model)
    try:
        import_weights(entry.format, [source], tmp)
        try:
            os.replace(tmp, model)
        except OSError:
            if not (model.is_dir() and any(model.iterdir())):  # another `get` finished first: keep its
                raise
    except CycleGANError as e:
        raise PretrainedError(f"{entry.name}: importing {source} as {entry.format} failed: {first_line(e)}") from None
    except OSError as e:
        raise PretrainedError(f"{model}: cannot write the imported model ({plain_reason(e)})") from None
    finally:
        _remove(tmp)


def _write_record(entry: CatalogEntry, base: Path, *, source: Path, sha256: str, size: int) -> None:
    record = {
        "name": entry.name,
        "url": entry.url,
        "file": entry.file,
        "member": entry.member,
        "format": entry.format,
        "sha256": sha256,
        "bytes": size,
        "catalog_sha256": entry.sha256,
        "source": str(source),
        "fetched_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cyclegan": __version__,
        "catalog": asdict(entry),
    }
    write_text_atomic(base / RECORD, json.dumps(record, indent=2) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _copy_out(model: Path, out: Path, *, overwrite: bool) -> Path:
    """Copy the imported model folder to ``out`` (whole or not at all)."""
    names = {p.name for p in model.iterdir()}
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise PretrainedError(f"{out}: exists and is not a folder; choose another --out")
        if any(out.iterdir()):
            if not overwrite:
                raise PretrainedError(f"{out}: already exists; pass --overwrite to replace it")
            if {p.name for p in out.iterdir()} - names:  # only an earlier copy of a model is replaced
                raise PretrainedError(f"{out}: holds files that are not part of a model; refusing to replace it")
    tmp = temp_sibling(out)
    try:
        shutil.copytree(model, tmp)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as e:
        raise PretrainedError(f"{out}: cannot copy the model there ({plain_reason(e)})") from None
    finally:
        _remove(tmp)
    return out
