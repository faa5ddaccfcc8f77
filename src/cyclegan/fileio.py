"""Atomic file writes: every output (images, JSON, arrays, configs) appears whole or not at all.

``write_json_atomic`` also writes non-finite floats as null (JSON has no inf/NaN).

The data goes to a hidden temporary file in the destination's folder (so the final rename stays on
one filesystem, and folder scans and globs skip it), is flushed to disk, and is renamed over the
destination; on any error the temporary file is removed and the destination is untouched.
Checkpoint directories use the same idea one level up (``checkpoint.save_checkpoint``).

Every file is created with mode 0666 less the umask, as other programs' files are (0644 under the
usual umask 022). Library writers that pick a mode of their own go through here instead:
``safetensors.torch.save_file`` creates its file 0600, so ``save_safetensors_atomic`` serialises in
memory and writes the bytes through ``atomic_write``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes


def temp_sibling(path: Path) -> Path:
    """A hidden, unique name next to ``path`` that keeps its suffix (some writers infer the format)."""
    return path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:12]}{path.suffix}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_write(p) as f: f.write(...)``: ``p`` is replaced only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    # os.open with 0o666 lets the umask decide permissions, unlike mkstemp's fixed 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def _json_safe(obj: Any) -> Any:
    """Non-finite floats become null: JSON has no inf/NaN, and strict readers reject Python's tokens."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON (numpy scalars and paths converted, inf/NaN as null), written atomically."""
    return write_text_atomic(path, json.dumps(_json_safe(obj), indent=2) + "\n")


def save_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, *, metadata: Mapping[str, str] | None = None
) -> Path:
    """``safetensors.torch.save_file`` with the umask's permissions and an atomic rename.

    save_file creates the file 0600 whatever the umask, so a shared model or checkpoint would be
    unreadable to the group and others that can read every other file next to it. The tensors
    (contiguous, dense, on any device) are serialised in memory, one copy of their size.
    """
    data = safetensors_bytes(dict(tensors), metadata=dict(metadata) if metadata is not None else None)
    return write_bytes_atomic(path, data)
