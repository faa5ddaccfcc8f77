"""Image arrays in ``.npz`` files: one domain as a uint8 ``[N, H, W, 3]`` array, as Keras CycleGAN
tutorials store small datasets (e.g. 64x64 CelebA / CartoonSet10k) with ``np.savez_compressed``.

Writing (``write_image_array``, used by ``cyclegan prep pack``) goes to a temporary file that is renamed
into place, so an interrupted pack never leaves a truncated archive behind.

Reading (``open_image_array``) depends on how the member was stored:

- compressed (``np.savez_compressed``, the default): numpy cannot map a deflated
  member, so the array is decompressed into memory once per process (10,000 images of 64x64 are
  123 MB);
- stored (``--no-compress``, ``np.savez``): the member's bytes sit verbatim in the zip, so we locate
  them and ``np.memmap`` them read-only: opening is instant and pages load on demand.

Archives written elsewhere work too: an array named ``images``, or the only array in the file, or the
one named by ``data.npz_key_a`` / ``npz_key_b`` (e.g. ``arr_0`` / ``arr_1`` of a file that holds both
domains, as ``np.savez_compressed(path, a, b)`` writes them).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan.errors import DataError
from cyclegan.fileio import atomic_write

NPZ_KEY = "images"  # the array name `cyclegan prep pack` writes


def _member_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an .npz file") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not a readable .npz archive ({e})") from None


def _pick_key(path: Path, names: list[str], key: str | None) -> str:
    if key is not None:
        if key not in names:
            raise DataError(f"{path}: no array named {key!r} (it holds {', '.join(names) or 'none'})")
        return key
    if NPZ_KEY in names:
        return NPZ_KEY
    if len(names) == 1:
        return names[0]
    if not names:
        raise DataError(f"{path}: the archive holds no arrays")
    raise DataError(
        f"{path}: holds several arrays ({', '.join(names)}); choose one with "
        "--set data.npz_key_a=NAME (or npz_key_b)"
    )


def _memmap_stored(path: Path, key: str) -> np.ndarray | None:
    """A read-only memmap of an uncompressed member, or None when it is compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(key + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        # The local file header (30 bytes) repeats the name and may carry a different extra field
        # than the central directory; its own lengths say where the data starts.
        f.seek(info.header_offset)
        header = f.read(30)
        if header[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject or not shape or 0 in shape:
        return None  # validated (and rejected) by the caller through a normal load
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


def _validate(path: Path, key: str, arr: np.ndarray) -> None:
    what = f"{path}: array {key!r}"
    if arr.dtype != np.uint8:
        raise DataError(f"{what} has dtype {arr.dtype}; expected uint8 images of shape (N, H, W, 3)")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"{what} has shape {tuple(arr.shape)}; expected (N, H, W, 3) RGB images")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DataError(f"{what} has shape {tuple(arr.shape)}: no images")


def open_image_array(path: str | Path, *, key: str | None = None) -> np.ndarray:
    """The validated uint8 [N, H, W, 3] array of ``path`` (memory-mapped when stored uncompressed)."""
    path = Path(path)
    key = _pick_key(path, _member_names(path), key)
    try:
        arr = _memmap_stored(path, key)
        if arr is None:
            with np.load(path, allow_pickle=False) as npz:
                arr = npz[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: cannot read array {key!r} ({e})") from None
    _validate(path, key, arr)
    return arr


def write_image_array(path: str | Path, images: np.ndarray, *, compress: bool = True) -> Path:
    """Write uint8 [N, H, W, 3] ``images`` as array ``images`` of a new .npz, atomically."""
    path = Path(path)
    _validate(path, NPZ_KEY, images)
    # A file object, not a name: numpy would append ".npz" to a temporary name.
    with atomic_write(path) as f:
        (np.savez_compressed if compress else np.savez)(f, **{NPZ_KEY: images})
    return path


class ArrayImages(Sequence):
    """One domain's images from an .npz array, as PIL images, for ``UnpairedImages``.

    The array is opened lazily in each process and never pickled: DataLoader workers started with
    "spawn" reopen (re-map, or re-decompress) it instead of receiving a copy through a pipe.
    """

    def __init__(self, path: str | Path, *, key: str | None = None, limit: int = 0) -> None:
        self.path = Path(path)
        arr = open_image_array(self.path, key=key)  # validates now, before any training work
        self.key = _pick_key(self.path, _member_names(self.path), key)
        self._array: np.ndarray | None = arr
        n = min(limit, arr.shape[0]) if limit else arr.shape[0]
        self._rows = np.arange(n)  # which rows of the array this sequence shows, in order
        self.memory_mapped = isinstance(arr, np.memmap)

    def select(self, positions: Sequence[int]) -> ArrayImages:
        """A view of some of these images (e.g. a validation split), sharing the opened array."""
        view = object.__new__(ArrayImages)
        view.__dict__.update(self.__dict__)
        view._rows = self._rows[np.asarray(positions, dtype=np.int64)]
        return view

    def _arr(self) -> np.ndarray:
        if self._array is None:
            self._array = open_image_array(self.path, key=self.key)
        return self._array

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Image.Image:  # type: ignore[override]
        if not -len(self._rows) <= index < len(self._rows):
            raise IndexError(index)
        return Image.fromarray(np.ascontiguousarray(self._arr()[self._rows[index]]))  # [H, W, 3] uint8

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    def __repr__(self) -> str:
        return f"ArrayImages({str(self.path)!r}, key={self.key!r}, n={len(self._rows)})"
