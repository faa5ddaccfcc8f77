"""TensorFlow-1 checkpoints imported without TensorFlow: AnimeGANv2 (``animeganv2-tf``) and White-box
Cartoonization (``whitebox``).

The fixtures under tests/fixtures/tf/ were written once by TensorFlow itself
(tests/fixtures/make_tf_fixtures.py: the publishers' graphs in tf.compat.v1, their variable names,
random weights at reduced width, saved by tf.compat.v1.train.Saver), together with the output of the
publishers' inference graphs on tf/input.npy. These tests never import TensorFlow.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cyclegan.checkpoint import file_sha256, read_meta
from cyclegan.cli import main
from cyclegan.image import to_uint8
from cyclegan.importers import IMPORT_FORMATS, ForeignWeightsError, import_weights
from cyclegan.importers.tfcheckpoint import TFCheckpoint, crc32c, masked_crc32c, tf_shape
from cyclegan.importers.whitebox import whitebox_plan
from cyclegan.modelfile import load_any_generator
from cyclegan.networks import AnimeGANv2Generator, WhiteBoxGenerator, count_parameters

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
ANIME = FIXTURES / "animeganv2" / "Hayao-8.ckpt"
WHITEBOX = FIXTURES / "whitebox" / "model-4"
DATA = ".data-00000-of-00001"


def _input() -> torch.Tensor:
    return torch.from_numpy(np.load(FIXTURES / "input.npy")).permute(0, 3, 1, 2)  # [1, 3, 48, 64]


def _reference(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(FIXTURES / name)).permute(0, 3, 1, 2)  # [1, 3, 48, 64]


def _levels(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((to_uint8(a).int() - to_uint8(b).int()).abs().max())


def _copy(prefix: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".index", DATA):
        shutil.copy(prefix.with_name(prefix.name + suffix), dest / (prefix.name + suffix))
    return dest / prefix.name


# ------------------------------------------------------------------------------------------------ forward
# passes


def test_animeganv2_tf_import_reproduces_the_tensorflow_graph():
    converted = IMPORT_FORMATS["animeganv2-tf"]([ANIME])
    net = converted.generators["a2b"]
    assert (converted.config.model.generator.name == "animeganv2_tf"
            and converted.config.model.generator.ngf == 8)
    with torch.inference_mode():
        y = net(_input())  # test.py feeds RGB
    ref = _reference("animeganv2/output_rgb.npy")
    assert _levels(y, ref) <= 1
    assert float((y - ref).abs().max()) < 1e-4  # measured 1.3e-6


def test_the_ports_upsampling_would_not_reproduce_tensorflow():
    # Why animeganv2_tf exists: the same weights in the port's layout (bilinear, aligned corners,
    # GroupNorm eps 1e-5) give another picture than the authors' TF graph.
    tf_net = IMPORT_FORMATS["animeganv2-tf"]([ANIME]).generators["a2b"]
    port = AnimeGANv2Generator(ngf=8).eval()
    port.load_state_dict(tf_net.state_dict())
    with torch.inference_mode():
        assert _levels(port(_input()), _reference("animeganv2/output_rgb.npy")) > 1


def test_whitebox_import_reproduces_the_tensorflow_graph_with_its_guided_filter():
    converted = IMPORT_FORMATS["whitebox"]([WHITEBOX])
    net = converted.generators["a2b"]
    bgr = _input()  # cartoonize.py feeds this array as BGR; our model takes RGB
    with torch.inference_mode():
        y = net(bgr.flip(1)).flip(1)
    ref = _reference("whitebox/output_bgr.npy")
    assert _levels(y, ref) <= 1
    assert float((y - ref).abs().max()) < 1e-4  # measured 1.3e-7
    # the guided filter is part of the model: the U-Net alone is another picture
    with torch.inference_mode():
        assert _levels(net.generate(bgr), ref) > 1


def test_the_released_layouts_have_the_publishers_parameter_counts():
    assert count_parameters(WhiteBoxGenerator(ngf=32)) == 1_467_075  # model-33999's data file / 4 bytes
    assert count_parameters(AnimeGANv2Generator(ngf=64)) == 2_143_552


# ------------------------------------------------------------------------------------------------ the reader


def test_crc32c_matches_the_castagnoli_check_value_across_chunk_sizes():
    assert crc32c(b"123456789") == 0xE3069283
    rng = np.random.default_rng(0)
    for n in (0, 1, 4095, 4096, 4097, 3 * 4096 + 17):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        crc = 0xFFFFFFFF
        for byte in data:  # bitwise reference
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        assert crc32c(data) == crc ^ 0xFFFFFFFF


def test_the_reader_lists_the_publishers_names_shapes_and_dtypes():
    ckpt = TFCheckpoint(WHITEBOX)
    assert len(ckpt.entries) == 36
    entry = ckpt.entries["generator/block_3/conv2/weights"]
    assert entry.shape == (3, 3, 16, 16) and entry.dtype_name == "float32"
    assert ckpt.read("generator/Conv_9/biases").shape == (3,)
    anime = TFCheckpoint(ANIME)
    # depthwise [kh, kw, 2 x 16, 1]
    assert anime.entries["generator/G_MODEL/C/r1/r1/w"].shape == (3, 3, 32, 1)
    assert "generator/G_MODEL/C/r4/2/gamma" in anime.entries


@pytest.mark.parametrize("form", ["prefix", "index", "data", "folder"])
def test_a_checkpoint_is_named_by_prefix_either_file_or_its_folder(form):
    path = {"prefix": ANIME, "index": ANIME.with_name(ANIME.name + ".index"),
            "data": ANIME.with_name(ANIME.name + DATA), "folder": ANIME.parent}[form]
    assert TFCheckpoint(path).index_path == ANIME.with_name(ANIME.name + ".index")


# ------------------------------------------------------------------------------------------------ hostile
# input


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _block(records: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in records)
    body += struct.pack("<II", 0, 1)  # one restart point at 0
    return body + b"\0" + struct.pack("<I", masked_crc32c(body + b"\0"))


def _index(entries: dict[str, bytes]) -> bytes:
    """A LevelDB table as TF's BundleWriter lays it out: one data block, an empty metaindex, an index."""
    records = [(b"", b"\x08\x01\x1a\x02\x08\x01")] + sorted((k.encode(), v) for k, v in entries.items())
    data = _block(records)
    meta = _block([])
    index = _block([(b"\xff", _varint(0) + _varint(len(data) - 5))])
    footer = _varint(len(data)) + _varint(len(meta) - 5) + _varint(len(data)
                                                                   + len(meta)) + _varint(len(index) - 5)
    footer = footer.ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    return data + meta + index + footer


def _entry(shape: list[int], *, dtype: int = 1, offset: int = 0, size: int | None = None) -> bytes:
    dims = b"".join(b"\x12" + _varint(len(d := b"\x08" + _varint(n))) + d for n in shape)
    size = 4 * int(np.prod(shape)) if size is None else size
    return b"\x08" + _varint(dtype) + b"\x12" + _varint(len(dims)) + dims + b"\x20" + _varint(
        offset) + b"\x28" + _varint(size)


@pytest.mark.parametrize(("entry", "match"), [
    (_entry([1 << 40, 1 << 40], size=16), "declares shape"),  # never allocated
    (_entry([4], offset=10**12), "lies at bytes"),
    (_entry([(1 << 64) - 1]), "impossible shape"),  # int64 -1: an unknown dimension
    (_entry([2] * 9), "impossible shape"),
])
def test_hostile_index_entries_are_one_line_before_any_allocation(tmp_path, entry, match):
    (tmp_path / "x.index").write_bytes(_index({"generator/Conv/weights": entry}))
    (tmp_path / ("x" + DATA)).write_bytes(bytes(16))
    with pytest.raises(ForeignWeightsError, match=match) as e:
        TFCheckpoint(tmp_path / "x")
    assert "\n" not in str(e.value)


def test_a_hand_built_index_reads_like_tensorflows(tmp_path):
    # the builder above is right, so the refusals above come from the checks and not from a bad table
    (tmp_path / "x.index").write_bytes(_index({"v": _entry([2, 2])}))
    (tmp_path / ("x" + DATA)).write_bytes(np.arange(4, dtype="<f4").tobytes())
    assert TFCheckpoint(tmp_path / "x").read("v").tolist() == [[0.0, 1.0], [2.0, 3.0]]


def _refused(tmp_path: Path, fmt: str, src: Path, match: str) -> str:
    out = tmp_path / "model"
    res = CliRunner().invoke(main, ["import", fmt, str(src), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("error: ") and res.output.strip().count("\n") == 0, res.output
    assert match in res.output, res.output
    assert not out.exists() and not list(out.parent.glob(".model*"))  # nothing written, no temporary left
    return res.output


def test_a_truncated_data_file_is_refused(tmp_path):
    prefix = _copy(ANIME, tmp_path / "ckpt")
    data = prefix.with_name(prefix.name + DATA)
    data.write_bytes(data.read_bytes()[:-1000])
    _refused(tmp_path, "animeganv2-tf", prefix, "truncated")


def test_a_corrupted_data_file_fails_the_crc(tmp_path):
    prefix = _copy(WHITEBOX, tmp_path / "ckpt")
    data = prefix.with_name(prefix.name + DATA)
    raw = bytearray(data.read_bytes())
    raw[5000] ^= 0x40
    data.write_bytes(bytes(raw))
    _refused(tmp_path, "whitebox", prefix, "CRC-32C")


@pytest.mark.parametrize("garbage", [b"", b"\0" * 100, b"not a table" * 50])
def test_a_garbage_index_is_refused(tmp_path, garbage):
    prefix = _copy(WHITEBOX, tmp_path / "ckpt")
    prefix.with_name(prefix.name + ".index").write_bytes(garbage)
    _refused(tmp_path, "whitebox", prefix, "not a TensorFlow checkpoint index")


def test_a_flipped_bit_in_the_index_fails_its_block_crc(tmp_path):
    prefix = _copy(ANIME, tmp_path / "ckpt")
    index = prefix.with_name(prefix.name + ".index")
    raw = bytearray(index.read_bytes())
    raw[40] ^= 0x01
    index.write_bytes(bytes(raw))
    _refused(tmp_path, "animeganv2-tf", prefix, "CRC-32C")


def test_a_missing_data_file_is_named(tmp_path):
    prefix = _copy(ANIME, tmp_path / "ckpt")
    prefix.with_name(prefix.name + DATA).unlink()
    _refused(tmp_path, "animeganv2-tf", prefix, DATA)


def test_nan_weights_written_by_tensorflow_are_refused(tmp_path):
    _refused(tmp_path, "animeganv2-tf", FIXTURES / "animeganv2_nan" / "Hayao-2.ckpt",
             "variable generator/G_MODEL/C/r2/r2/w holds non-finite values")


def test_a_misshapen_variable_is_named_with_both_shapes(tmp_path):
    # written by TensorFlow with a 4-channel out_layer
    _refused(tmp_path, "animeganv2-tf", FIXTURES / "animeganv2_4ch" / "Hayao-2.ckpt",
             "variable generator/G_MODEL/out_layer/Conv/weights has shape [1, 1, 1, 4], expected [1, 1, 1, "
             "3]")


def test_the_other_tf_format_is_refused_with_a_hint(tmp_path):
    assert "cyclegan import whitebox" in _refused(tmp_path, "animeganv2-tf", WHITEBOX, "not an AnimeGANv2")
    assert "cyclegan import animeganv2-tf" in _refused(tmp_path, "whitebox", ANIME, "not a White-box")


def test_missing_variables_are_named(tmp_path):
    # the publisher's names with a residual block fewer: block_3 is gone from the index
    ckpt = TFCheckpoint(WHITEBOX)
    raw = {}
    blob = bytearray()
    for name, e in ckpt.entries.items():
        if name.startswith("generator/block_3/"):
            continue
        value = ckpt.read(name).numpy().tobytes()
        raw[name] = _entry(list(e.shape), offset=len(blob))
        blob += value
    (tmp_path / "m.index").write_bytes(_index(raw))
    (tmp_path / ("m" + DATA)).write_bytes(bytes(blob))
    _refused(tmp_path, "whitebox", tmp_path / "m",
             "variable generator/block_3/conv1/weights is missing (and 3 more)")


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize(("fmt", "prefix", "size_multiple"),
                         [("animeganv2-tf", ANIME, 4), ("whitebox", WHITEBOX, 8)])
def test_cli_import_then_translate(tmp_path, fmt, prefix, size_multiple):
    runner = CliRunner()
    res = runner.invoke(main, ["import", fmt, str(prefix), "--out", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    meta = read_meta(tmp_path / "model")
    sources = {s["file"]: s["sha256"] for s in meta["imported"]["sources"]}
    assert sources == {p.name: file_sha256(p) for p in (prefix.with_name(prefix.name + ".index"),
                                                        prefix.with_name(prefix.name + DATA))}
    loaded = load_any_generator(tmp_path / "model")
    assert loaded.info.size_multiple == size_multiple
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (21, 30, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    res = runner.invoke(main,
                        ["translate", "--checkpoint", str(tmp_path / "model"), str(tmp_path / "photo.png"),
                               "--out", str(tmp_path / "anime.png"), "--precision", "fp32", "--quiet"])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "anime.png").size == (30, 21)


def test_python_api_import_matches_the_reference_after_writing(tmp_path):
    result = import_weights("whitebox", [WHITEBOX.parent], tmp_path / "wb")  # the folder form
    assert result.max_abs_diff == 0.0
    net = load_any_generator(tmp_path / "wb").model
    with torch.inference_mode():
        y = net(_input().flip(1)).flip(1)
    assert _levels(y, _reference("whitebox/output_bgr.npy")) <= 1


# The variable table of the publisher's released checkpoint, as its index lists it
# (SystemErrorWang/White-box-Cartoonization, test_code/saved_models/model-33999.index): name -> shape.
RELEASED_WHITEBOX = {
    "Conv": (7, 7, 3, 32), "Conv_1": (3, 3, 32, 32), "Conv_2": (3, 3, 32, 64), "Conv_3": (3, 3, 64, 64),
    "Conv_4": (3, 3, 64, 128), "Conv_5": (3, 3, 128, 64), "Conv_6": (3, 3, 64, 64), "Conv_7": (3, 3, 64, 32),
    "Conv_8": (3, 3, 32, 32), "Conv_9": (7, 7, 32, 3),
    **{f"block_{b}/{c}": (3, 3, 128, 128) for b in range(4) for c in ("conv1", "conv2")},
}


def test_the_whitebox_plan_is_the_released_checkpoints_variable_table():
    with torch.device("meta"):
        ours = WhiteBoxGenerator(ngf=32).state_dict()
    shapes = [tuple(v.shape) for v in ours.values()]
    table = {name: tf_shape(shape, kind) for (name, kind), shape in zip(whitebox_plan(4), shapes)}
    expected = {}
    for layer, shape in RELEASED_WHITEBOX.items():
        expected[f"generator/{layer}/weights"] = shape
        expected[f"generator/{layer}/biases"] = (shape[-1],)
    assert table == expected


def test_a_float64_variable_beyond_float32_range_is_refused_not_turned_into_inf(tmp_path):
    ckpt = TFCheckpoint(WHITEBOX)
    raw, blob = {}, bytearray()
    for name, e in ckpt.entries.items():
        value = ckpt.read(name).numpy().astype("<f8")
        if name == "generator/Conv_4/biases":
            value[0] = 1e300
        raw[name] = _entry(list(e.shape), dtype=2, offset=len(blob), size=value.nbytes)
        blob += value.tobytes()
    (tmp_path / "m.index").write_bytes(_index(raw))
    (tmp_path / ("m" + DATA)).write_bytes(bytes(blob))
    _refused(tmp_path, "whitebox", tmp_path / "m", "variable generator/Conv_4/biases holds non-finite values")


def test_a_folder_of_several_checkpoints_uses_the_one_tensorflows_checkpoint_file_names(tmp_path):
    folder = tmp_path / "generator_Hayao_weight"
    _copy(ANIME, folder)
    second = _copy(ANIME, folder / "other")
    for suffix in (".index", DATA):
        second.with_name(second.name + suffix).rename(folder / f"Hayao-9.ckpt{suffix}")
    (folder / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/Hayao-9.ckpt"\n')
    assert TFCheckpoint(folder).index_path == folder / "Hayao-9.ckpt.index"  # its base name, in this folder
    (folder / "checkpoint").unlink()
    with pytest.raises(ForeignWeightsError, match="holds 2 TensorFlow checkpoints"):
        TFCheckpoint(folder)
