"""Read TensorFlow-1 checkpoints (``PREFIX.index`` + ``PREFIX.data-00000-of-00001``) without TensorFlow.

A ``tf.train.Saver`` checkpoint is a *tensor bundle*: the ``.data`` shard holds the raw tensor bytes
back to back, and the ``.index`` is a LevelDB-format sorted table (TensorFlow's ``core/lib/io/table``)
whose key ``""`` holds a ``BundleHeaderProto`` and every other key is a variable name whose value is a
``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC-32C of the bytes). Both protobuf
messages are a handful of scalar fields, decoded here by hand (``tensor_bundle.proto``,
``tensor_shape.proto``, ``types.proto`` in the TensorFlow repository).

Everything in the files is treated as hostile: every length, offset and shape is checked against the
real file sizes before anything is allocated, so memory stays bounded by the ``.data`` file's size;
table blocks and tensors are checked against their CRC-32C; a problem is one ``ForeignWeightsError``
line naming the file and the reason.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cyclegan.config import Config
from cyclegan.importers.common import ForeignWeightsError
from cyclegan.networks import GENERATORS, build_generator

INDEX_SUFFIX = ".index"
DATA_SUFFIX = ".data-00000-of-00001"  # the one shard tf.train.Saver writes on one device
_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}$")
MAX_INDEX_BYTES = 16 << 20  # a generator's index is a few KB (3,000 variables: 116 KB)
MAX_RANK = 8
_TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB's table magic number, the last 8 bytes of the .index
_FOOTER_BYTES = 48  # two block handles padded to 40 bytes, then the magic
_BLOCK_TRAILER = 5  # compression type (1 byte) + masked CRC-32C (4 bytes)

# TensorFlow DataType enum (types.proto) -> numpy dtype, for the numeric types a weight can have.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
}
FLOAT_DTYPES = frozenset({1, 2, 19})  # float32, float64, float16
_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
                9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16"}


@dataclass(frozen=True)
class BundleEntry:
    """One variable of the bundle, as the index describes it (nothing read yet)."""

    name: str
    dtype: int  # TensorFlow DataType enum
    shape: tuple[int, ...]
    offset: int
    size: int
    crc32c: int | None  # masked, as stored

    @property
    def dtype_name(self) -> str:
        return _DTYPE_NAMES.get(self.dtype, f"DataType {self.dtype}")


def checkpoint_files(path: str | Path) -> tuple[Path, Path]:
    """(index, data) for a checkpoint given as its prefix (``Hayao-64.ckpt``), its ``.index`` file, its
    ``.data-00000-of-00001`` file, or a folder holding exactly one checkpoint (or a TF ``checkpoint``
    file naming one)."""
    path = Path(path)
    if path.is_dir():
        path = _prefix_in_folder(path)
    elif path.name.endswith(INDEX_SUFFIX):
        path = path.with_name(path.name[: -len(INDEX_SUFFIX)])
    elif _SHARD.search(path.name):
        path = path.with_name(_SHARD.sub("", path.name))
    index, data = path.with_name(path.name + INDEX_SUFFIX), path.with_name(path.name + DATA_SUFFIX)
    for f in (index, data):
        if not f.is_file():
            sharded = f is data and any(path.parent.glob(f"{path.name}.data-*-of-*"))
            raise ForeignWeightsError(
                f"{f}: no such file; a TensorFlow checkpoint PREFIX needs PREFIX{INDEX_SUFFIX} and "
                f"PREFIX{DATA_SUFFIX}"
                + (" (checkpoints split into several shards are not read)" if sharded else ""))
    return index, data


def _prefix_in_folder(folder: Path) -> Path:
    # The "checkpoint" text file of tf.train.Saver names the newest prefix; only its base name is used,
    # inside this folder, as TensorFlow's own test scripts do.
    state = folder / "checkpoint"
    if state.is_file() and state.stat().st_size < 1 << 16:
        found = re.search(r'^model_checkpoint_path:\s*"([^"\n]+)"', state.read_text(errors="replace"),
                          re.MULTILINE)
        if found and (folder / (Path(found.group(1)).name + INDEX_SUFFIX)).is_file():
            return folder / Path(found.group(1)).name
    indexes = sorted(folder.glob(f"*{INDEX_SUFFIX}"))
    if len(indexes) != 1:
        raise ForeignWeightsError(f"{folder}: holds {len(indexes)} TensorFlow checkpoints (*.index); give "
                                  f"the checkpoint prefix, e.g. {folder}/Hayao-64.ckpt")
    return indexes[0].with_name(indexes[0].name[: -len(INDEX_SUFFIX)])


class TFCheckpoint:
    """The variables of one single-shard TF-1 checkpoint: ``entries`` by name, ``read(name)`` -> Tensor."""

    def __init__(self, path: str | Path) -> None:
        self.index_path, self.data_path = checkpoint_files(path)
        self.data_size = self.data_path.stat().st_size
        self.entries: dict[str, BundleEntry] = read_index(self.index_path, data_size=self.data_size)

    @property
    def files(self) -> tuple[Path, Path]:
        return self.index_path, self.data_path

    def read(self, name: str) -> Tensor:
        """The variable ``name`` as a CPU tensor of its dtype and shape, its bytes checked against the CRC."""
        entry = self.entries[name]
        if entry.dtype not in _DTYPES:
            raise ForeignWeightsError(f"{self.index_path}: variable {name} holds {entry.dtype_name} values, "
                                      "which are not read")
        with open(self.data_path, "rb") as f:
            f.seek(entry.offset)
            raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise ForeignWeightsError(f"{self.data_path}: truncated: variable {name} needs bytes "
                                      f"{entry.offset}..{entry.offset + entry.size}, the file ends at "
                                      f"{entry.offset + len(raw)}")
        if entry.crc32c is not None and masked_crc32c(raw) != entry.crc32c:
            raise ForeignWeightsError(f"{self.data_path}: the bytes of variable {name} fail their CRC-32C "
                                      "check (a corrupted or mismatched data file)")
        array = np.frombuffer(raw, dtype=_DTYPES[entry.dtype]).reshape(entry.shape)
        return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))


# ------------------------------------------------------------------------------------------------ mapping

# How a TF variable's layout becomes ours: TF stores conv kernels as [kh, kw, in, out] and depthwise
# kernels as [kh, kw, channels, multiplier]; PyTorch as [out, in, kh, kw] and [channels, 1, kh, kw].
_TO_TORCH = {"conv": (3, 2, 0, 1), "depthwise": (2, 3, 0, 1), "vector": None}
# Optimizer slots and moving averages a training checkpoint keeps beside each variable: not weights.
_SLOT = re.compile(r"/(Adam|Adam_\d+|Momentum|RMSProp|RMSProp_\d+|ExponentialMovingAverage)$")


def tf_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """The TF shape of a variable that becomes a tensor of PyTorch ``shape`` by ``kind``."""
    perm = _TO_TORCH[kind]
    if perm is None:
        return tuple(shape)
    out = [0] * len(perm)
    for ours, theirs in enumerate(perm):
        out[theirs] = shape[ours]
    return tuple(out)


def check_plan(ckpt: TFCheckpoint, plan: list[tuple[str, str]], shapes: dict[str, torch.Size], *,
               scope: str, description: str) -> int:
    """Check, before anything is allocated, that ``ckpt`` holds exactly the variables of ``plan``
    ((TF name, kind) per entry of our state dict, in its order; ``shapes`` from a meta-device network)
    with the right shapes and float dtypes. Variables outside ``scope`` and optimizer slots are
    ignored; returns how many were."""
    where = ckpt.index_path
    if len(plan) != len(shapes):
        raise RuntimeError(f"importer bug: {description}: {len(plan)} variables for {len(shapes)} entries")
    names = [name for name, _ in plan]
    if missing := [n for n in names if n not in ckpt.entries]:
        raise ForeignWeightsError(f"{where}: does not match the inferred {description}: variable "
                                  f"{missing[0]} is "
                                  "missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    wanted = set(names)
    if extra := [n for n in ckpt.entries if n.startswith(scope) and n not in wanted and not _SLOT.search(n)]:
        e = ckpt.entries[extra[0]]
        raise ForeignWeightsError(f"{where}: does not match the inferred {description}: unexpected variable "
                                  f"{extra[0]} {list(e.shape)}"
                                  + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for (name, kind), shape in zip(plan, shapes.values()):
        entry = ckpt.entries[name]
        expected = tf_shape(tuple(shape), kind)
        if entry.shape != expected:
            raise ForeignWeightsError(f"{where}: variable {name} has shape {list(entry.shape)}, expected "
                                      f"{list(expected)} for the inferred {description}")
        if entry.dtype not in FLOAT_DTYPES:
            raise ForeignWeightsError(f"{where}: variable {name} holds {entry.dtype_name} values, expected "
                                      "floats")
    # TF writes each variable once, back to back; entries sharing bytes would let a small data file
    # expand into a large network.
    if (needed := sum(ckpt.entries[n].size for n in names)) > ckpt.data_size:
        raise ForeignWeightsError(f"{ckpt.data_path}: the variables need {needed:,} bytes but the data file "
                                  f"holds {ckpt.data_size:,}")
    return sum(1 for n in ckpt.entries if n not in wanted)


def first_kernel_width(ckpt: TFCheckpoint, name: str, *, what: str, hint: str = "") -> int:
    """Output channels of the generator's first 7x7 RGB kernel ``name`` (the width it was built with);
    a checkpoint without it is not ``what``, and ``hint`` may say which format it looks like."""
    first = ckpt.entries.get(name)
    if first is None or len(first.shape) != 4 or first.shape[:3] != (7, 7, 3) or first.shape[3] < 1:
        found = ", ".join(f"{n} {list(e.shape)}" for n, e in list(ckpt.entries.items())[:3])
        raise ForeignWeightsError(f"{ckpt.index_path}: not {what}: expected {name} [7, 7, 3, 32]; found "
                                  f"{len(ckpt.entries)} variables: {found}{hint}")
    return first.shape[3]


def build_from_plan(ckpt: TFCheckpoint, plan: list[tuple[str, str]], cfg: Config, *, scope: str,
                    description: str) -> tuple[torch.nn.Module, int]:
    """The generator of ``cfg`` filled from ``ckpt`` by ``plan``, in eval mode, and how many variables
    of the checkpoint were ignored. The plan is checked against a meta-device network first, so a
    checkpoint that does not match allocates nothing."""
    gcfg = cfg.model.generator
    with torch.device("meta"):
        shapes = GENERATORS[gcfg.name](gcfg).state_dict()
    ignored = check_plan(ckpt, plan, {k: v.shape for k, v in shapes.items()}, scope=scope,
                         description=description)
    net = build_generator(gcfg, init=cfg.model.init, init_gain=cfg.model.init_gain)
    load_plan(net, ckpt, plan)
    return net.eval(), ignored


def load_plan(net: torch.nn.Module, ckpt: TFCheckpoint, plan: list[tuple[str, str]]) -> None:
    """Fill ``net`` from ``ckpt`` by ``plan`` (checked by ``check_plan``): every value finite, each
    kernel moved into PyTorch's layout."""
    state = {}
    for (name, kind), (key, target) in zip(plan, net.state_dict().items()):
        stored = ckpt.read(name)
        value = stored.to(dtype=target.dtype)  # float64 beyond float32's range becomes inf here
        if not bool(torch.isfinite(value).all()):
            beyond = f" or beyond the range of {target.dtype}" if stored.dtype != target.dtype else ""
            raise ForeignWeightsError(f"{ckpt.data_path}: variable {name} holds non-finite values (NaN or "
                                      f"inf{beyond})")
        if (perm := _TO_TORCH[kind]) is not None:
            value = value.permute(*perm)
        state[key] = value.contiguous()
    net.load_state_dict(state, strict=True)


# ------------------------------------------------------------------------------------------------ the table


def read_index(path: Path, *, data_size: int) -> dict[str, BundleEntry]:
    """name -> entry of the ``.index`` table at ``path``, every entry checked to lie inside ``data_size``."""
    size = path.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise ForeignWeightsError(f"{path}: {size:,} bytes is too large for a checkpoint index")
    buf = path.read_bytes()
    try:
        records = _table_records(buf)
    except (IndexError, ValueError, struct.error) as e:
        raise ForeignWeightsError(f"{path}: not a TensorFlow checkpoint index ({e})") from None
    if b"" not in records:
        raise ForeignWeightsError(f"{path}: not a TensorFlow checkpoint index (no bundle header)")
    header = _fields(records.pop(b""), path, "the bundle header")
    shards = header.get(1, [1])[-1]
    if shards != 1:
        raise ForeignWeightsError(f"{path}: a checkpoint split into {shards} shards; only single-shard "
                                  "checkpoints (one .data-00000-of-00001 file) are read")
    if header.get(2, [0])[-1] != 0:
        raise ForeignWeightsError(f"{path}: a big-endian checkpoint; only little-endian ones are read")
    entries = {}
    for key, value in records.items():
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise ForeignWeightsError(f"{path}: a variable name is not UTF-8 ({key[:40]!r})") from None
        entries[name] = _entry(name, value, path, data_size)
    if not entries:
        raise ForeignWeightsError(f"{path}: the checkpoint holds no variables")
    return entries


def _table_records(buf: bytes) -> dict[bytes, bytes]:
    if len(buf) < _FOOTER_BYTES:
        raise ValueError(f"{len(buf)} bytes, shorter than a table footer")
    footer = buf[-_FOOTER_BYTES:]
    if struct.unpack("<Q", footer[-8:])[0] != _TABLE_MAGIC:
        raise ValueError("no table magic number at its end")
    pos = 0
    _meta_offset, pos = _varint(footer, pos)
    _meta_size, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    records: dict[bytes, bytes] = {}
    limit = len(buf) - _FOOTER_BYTES
    for _key, handle in _block_records(_block(buf, index_offset, index_size, limit)):
        offset, p = _varint(handle, 0)
        length, _ = _varint(handle, p)
        for key, value in _block_records(_block(buf, offset, length, limit)):
            records[key] = value
    return records


def _block(buf: bytes, offset: int, size: int, limit: int) -> bytes:
    if offset + size + _BLOCK_TRAILER > limit:
        raise ValueError(f"a block at {offset} of {size} bytes lies beyond the table")
    contents = buf[offset:offset + size]
    kind, crc = buf[offset + size], struct.unpack("<I", buf[offset + size + 1:offset + size + 5])[0]
    if masked_crc32c(contents + bytes([kind])) != crc:
        raise ValueError(f"the block at {offset} fails its CRC-32C check")
    if kind != 0:
        raise ValueError(f"block compression {kind} (snappy) is not read; TensorFlow writes uncompressed "
                         "indexes")
    return contents


def _block_records(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of one table block: prefix-compressed keys, then the restart array."""
    if len(block) < 4:
        raise ValueError("a block shorter than its restart count")
    restarts = struct.unpack("<I", block[-4:])[0]
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise ValueError("a block's restart array is longer than the block")
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > end:
            raise ValueError("a block entry runs past its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        out.append((key, block[pos:pos + vlen]))
        pos += vlen
    return out


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("a number runs past the end of its record")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("a number longer than 64 bits")


# ------------------------------------------------------------------------------------------------ protobuf


def _fields(msg: bytes, path: Path, what: str) -> dict[int, list]:
    """field number -> values of one protobuf message: varints as ints, fixed32 as ints, length-delimited
    fields as bytes (wire types 0, 5, 2; the fixed64 type 1 is skipped, groups are refused)."""
    out: dict[int, list] = {}
    pos = 0
    try:
        while pos < len(msg):
            tag, pos = _varint(msg, pos)
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                value, pos = _varint(msg, pos)
            elif wire == 5:
                value, pos = struct.unpack("<I", msg[pos:pos + 4])[0], pos + 4
            elif wire == 1:
                value, pos = msg[pos:pos + 8], pos + 8
            elif wire == 2:
                n, pos = _varint(msg, pos)
                value, pos = msg[pos:pos + n], pos + n
            else:
                raise ValueError(f"wire type {wire}")
            if pos > len(msg):
                raise ValueError("a field runs past the record")
            out.setdefault(number, []).append(value)
    except (ValueError, struct.error) as e:
        raise ForeignWeightsError(f"{path}: {what} is not a readable record ({e})") from None
    return out


def _entry(name: str, value: bytes, path: Path, data_size: int) -> BundleEntry:
    f = _fields(value, path, f"the entry of variable {name}")
    if 7 in f:
        raise ForeignWeightsError(f"{path}: variable {name} is stored in slices (a partitioned variable), "
                                  "which is not read")
    if f.get(3, [0])[-1] != 0:
        raise ForeignWeightsError(
            f"{path}: variable {name} lives in shard {f[3][-1]}; only one shard is read")
    dtype = f.get(1, [0])[-1]
    shape_fields = _fields(f.get(2, [b""])[-1], path, f"the shape of variable {name}")
    if shape_fields.get(3, [0])[-1]:
        raise ForeignWeightsError(f"{path}: variable {name} has an unknown rank")
    dims = tuple(_fields(d, path, f"the shape of variable {name}").get(1,
                                                                       [0])[-1] for d in shape_fields.get(2,
                                                                                                          []))
    if len(dims) > MAX_RANK or any(d >= 1 << 63 for d in dims):  # int64 -1 (unknown) comes as 2**64 - 1
        raise ForeignWeightsError(f"{path}: variable {name} has an impossible shape "
                                  f"{list(dims)[:MAX_RANK + 1]}")
    offset, size = f.get(4, [0])[-1], f.get(5, [0])[-1]
    if offset + size > data_size:
        raise ForeignWeightsError(f"{path}: variable {name} lies at bytes {offset}..{offset + size} but the "
                                  "data "
                                  f"file has {data_size} (truncated, or a data file of another checkpoint)")
    if dtype in _DTYPES and math.prod(dims) * _DTYPES[dtype].itemsize != size:
        raise ForeignWeightsError(f"{path}: variable {name} declares shape {list(dims)} of "
                                  f"{_DTYPE_NAMES[dtype]} but {size} bytes")
    crc = f.get(6, [None])[-1]
    return BundleEntry(name=name, dtype=dtype, shape=dims, offset=offset, size=size, crc32c=crc)


# ------------------------------------------------------------------------------------------------ CRC-32C


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


_CHUNK = 4096  # bytes per lane of the vectorised CRC


def _crc_update(crc: int, data: bytes) -> int:
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


@functools.lru_cache(maxsize=1)
def _zeros_operator() -> tuple[np.ndarray, ...]:
    # The CRC register update is linear in the register for a fixed message, so feeding _CHUNK zero
    # bytes is a 32x32 bit matrix; stored as four 256-entry tables, one per byte of the register.
    table = np.array(_CRC_TABLE, dtype=np.uint32)
    regs = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]).ravel()
    for _ in range(_CHUNK):
        regs = table[regs & 0xFF] ^ (regs >> 8)
    return tuple(regs.reshape(4, 256))


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of LevelDB tables and TensorFlow bundles.

    Whole 4 KiB chunks run side by side in numpy (each from a zero register), then are chained
    with the zero-feeding operator: crc(s, A + B) = shift(crc(s, A), len(B)) ^ crc(0, B).
    """
    head = len(data) % _CHUNK
    crc = _crc_update(0xFFFFFFFF, data[:head])
    if len(data) > head:
        table = np.array(_CRC_TABLE, dtype=np.uint32)
        lanes = np.frombuffer(data, dtype=np.uint8, offset=head).reshape(-1, _CHUNK)
        regs = np.zeros(lanes.shape[0], dtype=np.uint32)
        for j in range(_CHUNK):
            regs = table[(regs ^ lanes[:, j]) & 0xFF] ^ (regs >> 8)
        t0, t1, t2, t3 = (t.tolist() for t in _zeros_operator())
        for reg in regs.tolist():
            crc = t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24] ^ reg
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The stored form (LevelDB's mask): rotated right by 15 bits plus a constant, so that a CRC of
    data holding CRCs stays well distributed."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
