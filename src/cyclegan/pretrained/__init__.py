"""Publicly released generators: list the catalog, download one, import it, cache it, re-check it.

``get(NAME)`` downloads the catalog's file(s) (progress bar, resumed when cut, bounded in size and
time, checked against the catalog's size, SHA-256 or git blob SHA-1 where it has them; see
``cyclegan.download``) into ``<cache>/pretrained/NAME/source/``, imports them with
``cyclegan.importers`` into ``<cache>/pretrained/NAME/model/`` and records what was fetched and its
hashes in ``<cache>/pretrained/NAME/download.json`` (``record``). After that, ``pretrained:NAME``
works wherever a model path does (``cyclegan.sources``). A second ``get`` finds the model, compares
the recorded hashes with the catalog's (which may have gained one since) and returns.

A download the importer refuses is removed from the cache, so the next ``get`` fetches it again
rather than failing on the same bytes. Models released together in one archive (the CUT authors'
six) share one download, kept in ``<cache>/pretrained/archives/``; each model's file is taken out
of it by name. A TensorFlow checkpoint is several files (``.index`` + ``.data-00000-of-00001``):
the catalog lists them (``files``), each is fetched and checked into the source folder, and the
importer is given their common prefix (``import_path``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cyclegan.download import DEFAULT_DEADLINE, Deadline, DownloadError, download, file_git_sha1
from cyclegan.errors import CycleGANError, first_line, plain_reason
from cyclegan.fileio import atomic_write, temp_sibling
from cyclegan.importers import IMPORT_FORMATS, import_weights
from cyclegan.importers.onnx_foreign import FORMAT as ONNX_FORMAT
from cyclegan.importers.onnx_foreign import OnnxImportOptions
from cyclegan.networks.foreign import ConventionError, OnnxConvention
from cyclegan.pretrained.record import RECORD, FileRecord, read_record, write_record
from cyclegan.pretrained.verify import ModelCheck, catalog_problems, download_path, verify_model
from cyclegan.sources import (
    CatalogEntry,
    ModelSourceError,
    catalog_entry,
    load_catalog,
    pretrained_dir,
    pretrained_model_dir,
)

__all__ = [
    "RECORD",
    "CatalogEntry",
    "DownloadError",
    "ModelCheck",
    "ModelSourceError",
    "PretrainedError",
    "PretrainedModel",
    "get",
    "is_downloaded",
    "list_models",
    "read_record",
    "styles",
    "terms",
    "verify",
]


class PretrainedError(CycleGANError):
    """A catalog model that cannot be fetched or imported (bad archive, destination in the way)."""


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    model_dir: Path  # the imported model in the cache: what pretrained:NAME resolves to
    source: Path  # what was imported (a file, the file taken out of an archive, or a checkpoint prefix)
    sha256: str | None  # of the (first) download, as recorded when it was fetched
    downloaded: bool  # fetched and imported by this call (False: the cache had it)
    out: Path | None  # the copy made for --out

    def line(self) -> str:
        how = "downloaded and imported" if self.downloaded else "already in the cache"
        where = f"; copied to {self.out}" if self.out is not None else ""
        return f"{self.name}: {how} at {self.model_dir}{where} (use --model pretrained:{self.name})"


def list_models(style: str | None = None) -> list[CatalogEntry]:
    """The catalog, in its order (the shipped one, then any ``CYCLEGAN_PRETRAINED_CATALOG`` additions);
    with ``style``, only the models tagged with it (case-insensitive)."""
    models = list(load_catalog().values())
    if style is None:
        return models
    tag = style.strip().lower()
    known = styles(models)
    if tag not in known:
        raise ModelSourceError(f"style {style!r}: no catalog model has it (styles: "
                               f"{', '.join(sorted(known))})")
    return [e for e in models if tag in e.styles]


def styles(models: list[CatalogEntry] | None = None) -> set[str]:
    """Every style tag of the catalog."""
    return {t for e in (models if models is not None else load_catalog().values()) for t in e.styles}


def terms(entry: CatalogEntry) -> str:
    """One line on what the model may be used for: its licence, and why it is non-commercial when it is."""
    head = "NON-COMMERCIAL use only" if entry.non_commercial else "terms"
    return f"{head}: {entry.licence}; {entry.licence_note}"


def is_downloaded(name: str) -> bool:
    model = pretrained_model_dir(name)
    return model.is_dir() and any(model.iterdir())


def get(
    name: str,
    *,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool | None = True,
    offline: bool | None = None,
    deadline: Deadline = DEFAULT_DEADLINE,
) -> PretrainedModel:
    """Download, check and import catalog model ``name`` into the cache (once), and copy it to ``out``.

    A model already in the cache is compared with the catalog's hashes first (from download.json, or
    the files re-hashed where it lacks one), and refused with what to delete when they differ.
    ``overwrite`` lets ``out`` replace an earlier copy of a model there (never another folder).
    ``progress``, ``offline`` and ``deadline`` (each file's) are as in ``cyclegan.download.download``.
    """
    entry = catalog_entry(name)
    base = pretrained_dir(name)
    model = pretrained_model_dir(name)
    downloaded = False
    if is_downloaded(name):
        problems, _ = catalog_problems(entry, rehash=False)
        if problems:
            raise PretrainedError(
                f"{name}: the cached download does not match the catalog: {problems[0]}"
                f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; delete {base} and run "
                f"`cyclegan pretrained get {name}` again"
            )
        record = read_record(name) or {}
        source = Path(record["source"]) if isinstance(record.get("source"), str) else _import_target(entry,
                                                                                                     base)
        sha = record.get("sha256") if isinstance(record.get("sha256"), str) else None
    else:
        options = _check_importer(entry)
        fetched = _fetch(entry, progress=progress, offline=offline, deadline=deadline)
        source = _extract(entry, Path(fetched[0].path), base) if entry.member else _import_target(entry, base)
        _import(entry, source, model, fetched, options)
        write_record(entry, source=source, files=fetched)
        sha = fetched[0].sha256
        downloaded = True
    copied = _copy_out(model, Path(out), overwrite=overwrite) if out is not None else None
    return PretrainedModel(name=name, model_dir=model, source=source, sha256=sha, downloaded=downloaded,
                           out=copied)


def verify(name: str | None = None) -> list[ModelCheck]:
    """Re-hash the cache: one ``ModelCheck`` per downloaded catalog model (or for ``name`` alone)."""
    if name is not None:
        entry = catalog_entry(name)
        if not pretrained_dir(name).exists():
            raise PretrainedError(f"{name}: not downloaded (nothing in {pretrained_dir(name)} to verify)")
        return [verify_model(entry)]
    return [verify_model(e) for e in load_catalog().values() if pretrained_dir(e.name).exists()]


def _import_target(entry: CatalogEntry, base: Path) -> Path:
    return base / "source" / (entry.import_path or entry.file)


def _check_importer(entry: CatalogEntry) -> object | None:
    """The importer's options for ``entry``; refuses before anything is downloaded when this
    installation cannot import the model or the catalog's options do not fit its importer."""
    if entry.format not in IMPORT_FORMATS:
        raise PretrainedError(f"{entry.name}: needs the import format {entry.format!r}, which this "
                              f"installation lacks (it has {', '.join(sorted(IMPORT_FORMATS))}); update "
                              "cyclegan")
    if entry.format == ONNX_FORMAT:
        options = dict(entry.import_options)
        convert = options.pop("convert", True)
        try:
            return OnnxImportOptions(convention=OnnxConvention(**options), convert=convert)
        except ConventionError as e:
            raise PretrainedError(f"{entry.name}: import_options: {first_line(e)}") from None
        except TypeError:  # a field missing: the catalog reader checked names and types, not completeness
            raise PretrainedError(f"{entry.name}: import_options must give layout, value_range, channels and "
                                  "multiple for an onnx model") from None
    if entry.import_options:
        raise PretrainedError(f"{entry.name}: import format {entry.format} takes no import_options")
    return None


def _fetch(entry: CatalogEntry, *, progress, offline, deadline: Deadline) -> list[FileRecord]:
    """Download and check every file of ``entry``; what was fetched (or found already in place)."""
    fetched = []
    for file in entry.downloads():
        result = download(file.url, download_path(entry, file), sha256=file.sha256, git_sha1=file.git_sha1,
                          size=file.size_bytes, progress=progress, offline=offline, deadline=deadline)
        fetched.append(FileRecord(name=file.name, url=file.url, path=str(result.path), bytes=result.bytes,
                                  sha256=result.sha256,
                                  git_sha1=result.git_sha1 or file_git_sha1(result.path)))
    return fetched


def _extract(entry: CatalogEntry, archive: Path, base: Path) -> Path:
    """Take ``entry.member`` (a path tail) out of the tar ``archive`` into ``base/source/``."""
    assert entry.member is not None
    dest = base / "source" / Path(entry.member).name
    want = entry.member.strip("/")
    try:
        with tarfile.open(archive) as tar:
            found = [m for m in tar.getmembers() if m.isfile()
                     and (m.name == want or m.name.endswith("/" + want))]
            if not found:
                raise PretrainedError(f"{archive}: has no {want}; delete it to download {entry.url} again")
            src = tar.extractfile(found[0])
            assert src is not None  # a regular file member
            with src, atomic_write(dest) as f:
                shutil.copyfileobj(src, f, 1 << 20)
    except (tarfile.TarError, EOFError) as e:
        raise PretrainedError(
            f"{archive}: not a readable tar archive ({first_line(e)}); delete it and retry") from None
    except OSError as e:
        raise PretrainedError(f"{dest}: cannot write ({plain_reason(e)})") from None
    return dest


def _import(entry: CatalogEntry, source: Path, model: Path, fetched: list[FileRecord],
            options: object | None) -> None:
    """Import into a hidden sibling, then rename: ``model/`` is complete or absent. Bytes the importer
    refuses are removed from the cache (each download, or the file taken out of an archive)."""
    tmp = temp_sibling(model)
    try:
        # Formats without options take no ``options`` argument at all.
        import_weights(entry.format, [source], tmp, **({} if options is None else {"options": options}))
        try:
            os.replace(tmp, model)
        except OSError:
            if not (model.is_dir() and any(model.iterdir())):  # another `get` finished first: keep its
                raise
    except CycleGANError as e:
        # An archive passed its own checks; only what was taken out of it is dropped.
        bad = [source] if entry.member else [Path(f.path) for f in fetched]
        for path in bad:
            _remove(path)
        raise PretrainedError(
            f"{entry.name}: importing {source} as {entry.format} failed: {first_line(e)}; removed "
            f"{', '.join(p.name for p in bad)} from the cache ({bad[0].parent}), so the next get downloads "
            "it again"
        ) from None
    except OSError as e:
        raise PretrainedError(f"{model}: cannot write the imported model ({plain_reason(e)})") from None
    finally:
        _remove(tmp)


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
                raise PretrainedError(f"{out}: holds files that are not part of a model; refusing to replace "
                                      "it")
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
