"""Reading PyTorch pickle files (``torch.save`` output) that may come from anyone.

Every ``torch.load`` of the project goes through ``load_weights_only``:

- ``weights_only=True``: tensors and plain containers only; a pickled object or function (``posix.system``,
  ``builtins.exec``) is refused before anything of it runs, and the refusal says so in our words:
  torch's own message advises turning the check off, which must never reach a user.
- a zip-format file (PyTorch >= 1.6) is checked before torch reads it: the sizes its members declare
  once inflated may not exceed ``MAX_INFLATION`` times the file's own size. ``torch.save`` stores its
  members uncompressed, so a real file passes with room to spare, while a small file whose member
  inflates to gigabytes ("zip bomb") is refused before a byte of it is inflated.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from cyclegan.errors import first_line

# A member may inflate to at most this many times the file's size (plus the slack below): torch.save
# writes members uncompressed (ratio 1); a re-zipped file of float weights deflates by far less than 2x.
MAX_INFLATION = 2
INFLATION_SLACK = 1 << 20  # bytes: the pickle, version and byte-order records of a tiny file

# torch's refusal names the global it would have had to import: "Unsupported global: GLOBAL builtins.exec"
# (older torch) or "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")
# torch's advice to load the file without the check: never shown.
_PREAMBLE = ("Weights only load failed", "In PyTorch 2.6", "Please file an issue", "Check the documentation",
             "This file can still be loaded", "(1)", "(2)")
_ADVICE = re.compile(r"weights_only|arbitrary code|trusted source|pytorch\.org|torch\.load", re.IGNORECASE)


class UnsafeFileError(ValueError):
    """A file that is no plain tensor file: pickled code or objects, a zip bomb, or junk. ``reason``:
    one line in our words, to follow the file's name."""

    def __init__(self, reason: str, *, holds_code: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.holds_code = holds_code


def check_zip_inflation(source: str | os.PathLike | bytes) -> None:
    """Refuse a zip-format torch file whose members declare more inflated bytes than its own size allows.

    ``source``: a path or the file's bytes. Files that are not zip archives (the legacy format of
    PyTorch < 1.6) pass; their storages are read at the size the file holds.
    """
    if isinstance(source, (bytes, bytearray)):
        size = len(source)

        def handle():
            return io.BytesIO(source)
    else:
        size = os.path.getsize(source)

        def handle():
            return source
    if not zipfile.is_zipfile(handle()):
        return
    try:
        with zipfile.ZipFile(handle()) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UnsafeFileError(f"not a readable PyTorch file (broken zip archive: {first_line(e)})") from None
    declared = sum(m.file_size for m in members)
    bound = MAX_INFLATION * size + INFLATION_SLACK
    if declared > bound:
        biggest = max(members, key=lambda m: m.file_size)
        raise UnsafeFileError(
            f"its zip members would inflate to {declared:,} bytes ({biggest.filename}: "
            f"{biggest.file_size:,}) from a {size:,}-byte file; a PyTorch file holds its tensors "
            "uncompressed, so it was not read"
        )


def load_weights_only(source: str | os.PathLike | bytes, *, map_location: Any = "cpu",
                      what: str = "PyTorch file") -> Any:
    """``torch.load(source, weights_only=True)`` after ``check_zip_inflation``.

    Raises UnsafeFileError with one line for pickled code or objects (``holds_code``), a zip bomb, or a
    file torch cannot read; nothing of the file runs.
    """
    check_zip_inflation(source)
    target = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source)
    try:
        return torch.load(target, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise refusal(e, what=what) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types (RuntimeError, KeyError, EOFError) for junk
        raise UnsafeFileError(f"not a readable {what} ({type(e).__name__}: {_reason(e)})") from None


def refusal(error: BaseException, *, what: str = "PyTorch file") -> UnsafeFileError:
    """Our one line for torch's weights-only refusal ``error``: the global it names, never its advice."""
    text = str(error)
    if found := _GLOBAL.search(text):
        name = found.group(1)
        return UnsafeFileError(
            f"holds pickled code or objects ({name}), not only tensors; it was not loaded and nothing in it "
            "ran",
            holds_code=True,
        )
    return UnsafeFileError(f"not a readable {what} ({_reason(error)})")


def _reason(error: BaseException) -> str:
    """The reason in torch's message (the text after "WeightsUnpickler error:", else its first sentence that
    is not advice about the weights_only check), without terminal escapes; at most 200 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    for line in text.splitlines():
        for sentence in re.split(r"(?<=\.)\s+", line.strip()):
            if sentence and not _ADVICE.search(sentence) and not sentence.startswith(_PREAMBLE):
                return sentence[:200]
    return type(error).__name__


# torch.save's legacy (PyTorch < 1.6) files start with a pickled magic number: protocol 2, LONG1 of 10 bytes.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def is_torch_save_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` was written by ``torch.save`` (weights, a state dict) rather than a TorchScript
    ``save``: a zip archive with a data.pkl and no TorchScript code/, or the legacy format. Reads
    the zip directory or the first bytes only."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            return any(n.endswith("/data.pkl") for n in names) and not any("/code/" in n for n in names)
        with open(path, "rb") as f:
            return f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
