"""`cyclegan import onnx`: a foreign ONNX generator with its publisher's convention becomes a model folder
that translates (odd sizes, small images, video with --temporal flow), serves and quantizes like ours.

Fixtures (tests/fixtures/onnx, written by tests/fixtures/make_onnx_fixtures.py with the publishers' tools):
``animeganv3_like.onnx``, a TensorFlow graph converted by tf2onnx with AnimeGANv3's conventions (NHWC
input ``AnimeGANv3_input:0``, RGB in [-1, 1], tanh; sides multiples of 8, at least 256), and
``upsample_opset9.onnx``, an opset-9 graph with ``Upsample`` (NCHW, BGR, [0, 1]) written with onnx.helper;
beside each, ONNX Runtime's output on a test card, computed once by that script.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx2torch")

from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from cyclegan.cli import main
from cyclegan.image import pad_to_multiple
from cyclegan.importers import (
    import_weights,
    onnx_foreign,
)
from cyclegan.importers.common import ForeignWeightsError
from cyclegan.importers.onnx_foreign import OnnxImportOptions
from cyclegan.modelfile import OnnxGenerator, load_any_generator
from cyclegan.networks.foreign import AsymmetricLinearResize, ForeignGenerator, OnnxConvention
from cyclegan.quantize import Int8Limits
from cyclegan.runtime import onnx_cached
from cyclegan.serve.app import create_app
from cyclegan.serve.models import load_models
from cyclegan.translate import Translator

FIXTURES = Path(__file__).parent / "fixtures" / "onnx"
ANIME = FIXTURES / "animeganv3_like.onnx"
OPSET9 = FIXTURES / "upsample_opset9.onnx"
ANIME_FLAGS = ["--layout", "nhwc", "--range", "-1,1", "--channels", "rgb", "--multiple", "8", "--min-side",
               "256"]
OPSET9_FLAGS = ["--layout", "nchw", "--range", "0,1", "--channels", "bgr", "--multiple", "2"]
ANIME_CONVENTION = OnnxConvention(layout="nhwc", value_range="-1,1", channels="rgb", multiple=8, min_side=256)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth photo-like uint8 [H, W, 3] (noise would make every pixel a rounding edge case)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = [127.5 + 120 * np.sin(x / rng.uniform(20, 60) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(20,
                                                                                                        60))
             for _ in range(3)]
    return np.stack(chans, -1).round().clip(0, 255).astype(np.uint8)


def _anime_reference(rgb: np.ndarray) -> np.ndarray:
    """What ONNX Runtime gives for ``rgb`` [H, W, 3] (sides multiples of 8, at least 256), as the
    publisher's test_by_onnx.py feeds it: NHWC, [-1, 1]; back to uint8 RGB."""
    x = (rgb.astype(np.float32) / 127.5 - 1.0)[None]
    y = _ort(ANIME, x)[0]
    return np.clip(np.round((y + 1.0) * 127.5), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def anime(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "anime"
    r = _cli("import", "onnx", ANIME, "--out", out, *ANIME_FLAGS)
    assert r.exit_code == 0, r.output
    assert "PyTorch conversion (onnx2torch) within" in r.output
    return out


# ------------------------------------------------------------------------------------------ the folder


def test_import_writes_a_folder_that_rebuilds_the_convention_with_no_flags(anime):
    doc = onnx_foreign.describe(anime)
    assert doc["convention"] == ANIME_CONVENTION.to_dict()
    assert doc["backend"] == "torch" and doc["input"] == "AnimeGANv3_input:0"
    assert doc["max_level_diff"] <= onnx_foreign.MAX_LEVELS
    loaded = load_any_generator(anime)
    assert loaded.kind == "foreign" and isinstance(loaded.model, ForeignGenerator)
    assert loaded.model.size_multiple == 8 and loaded.model.min_side == 256
    assert loaded.info.size_multiple == 8 and loaded.info.direction == "a2b"
    with pytest.raises(Exception, match="only the a2b generator"):
        load_any_generator(anime, direction="b2a")


@pytest.mark.parametrize("name, convention", [
    ("animeganv3_like", ANIME_CONVENTION),
    ("upsample_opset9", OnnxConvention(layout="nchw", value_range="0,1", channels="bgr", multiple=2)),
])
def test_converted_graph_reproduces_the_publishers_onnx_runtime_reference(name, convention):
    """The PyTorch graph (onnx2torch, opset 9 Upsample upgraded to Resize) on the test card, in the file's own
    convention, within one level of ONNX Runtime's output that the fixture script stored."""
    ref = np.load(FIXTURES / f"{name}.reference.npz")
    model = onnx.load(str(FIXTURES / f"{name}.onnx"))
    net = ForeignGenerator(net=onnx_foreign.convert_onnx_graph(model),
                           convention=OnnxConvention(**(convention.to_dict() | {"min_side": 0})))
    for i in range(2):
        rgb = ref[f"input{i}"]
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1  # ours
        with torch.inference_mode():
            y = net(x)[0].permute(1, 2, 0).numpy()
        got = np.clip(np.round((y + 1) * 127.5), 0, 255).astype(int)
        assert got.shape == ref[f"output{i}"].shape
        assert np.abs(got - ref[f"output{i}"].astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------ translate


def test_translate_odd_size_comes_back_exact_and_within_one_level_of_onnx_runtime(anime, tmp_path):
    src = tmp_path / "odd.png"
    rgb = _photo(1001, 677)
    Image.fromarray(rgb).save(src)
    r = _cli("translate", "--checkpoint", anime, src, "--out", tmp_path / "out", "--precision", "fp32",
             "--quiet")
    assert r.exit_code == 0, r.output
    got = np.asarray(Image.open(tmp_path / "out" / "odd.png"))
    assert got.shape == (677, 1001, 3)
    # The same padded input through ONNX Runtime: reflection to multiples of 8 (translate's padding).
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    xp, (top, left) = pad_to_multiple(x, 8, minimum=16)
    padded = xp[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    expected = _anime_reference(padded)[top:top + 677, left:left + 1001]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_small_images_are_padded_to_the_minimum_side_as_the_wrapped_graph_does(anime):
    """A 40x48 image runs at 256x256 (edge pixels repeated), cropped back; the PyTorch module and the
    wrapped ONNX graph (what --precision auto/int8 run) agree."""
    rgb = _photo(48, 40, seed=2)
    tr = Translator.from_checkpoint(anime, device="cpu", precision="fp32")
    got = np.asarray(tr(Image.fromarray(rgb)))
    assert got.shape == (40, 48, 3)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    padded = torch.nn.functional.pad(x, (104, 104, 108, 108), mode="replicate")  # to 256 x 256
    expected = _anime_reference(padded[0].permute(1, 2, 0).byte().numpy())[108:148, 104:152]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    wrapped = OnnxGenerator(path=anime / "generator.onnx")
    y = wrapped(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1)
    via_ort = np.clip(np.round((y[0].permute(1, 2, 0).numpy() + 1) * 127.5), 0, 255).astype(int)
    assert np.abs(via_ort - got.astype(int)).max() <= 1


def test_video_with_temporal_flow(anime, tmp_path):
    av = pytest.importorskip("av")
    pytest.importorskip("cv2")
    src = tmp_path / "clip.mp4"
    base = _photo(64, 48, seed=4).astype(int)
    rng = np.random.default_rng(1)
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=12)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            arr = np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    out = tmp_path / "flow.mp4"
    r = _cli("translate", "--checkpoint", anime, src, "--out", out, "--temporal", "flow", "--quiet")
    assert r.exit_code == 0, r.output
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)


def test_serve_translates_with_the_imported_model(anime):
    models = load_models([f"hayao={anime}"], device="cpu")
    assert models["hayao"].directions == ["a2b"]
    buf = io.BytesIO()
    Image.fromarray(_photo(72, 40, seed=5)).save(buf, format="PNG")
    with TestClient(create_app(models)) as client:
        r = client.post("/api/translate", params={"model": "hayao"},
                        files={"image": ("p.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (72, 40)


def test_int8_quantizes_the_wrapped_graph(tmp_path, monkeypatch):
    """--precision int8 on a converted import: ONNX Runtime quantizes the folder's wrapped graph (the
    convention inside it), checked against fp32 on the calibration images."""
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "m"
    assert _cli("import", "onnx", OPSET9, "--out", model, *OPSET9_FLAGS).exit_code == 0
    cal = tmp_path / "cal"
    cal.mkdir()
    for i in range(2):
        Image.fromarray(_photo(32, 32, seed=10 + i)).save(cal / f"{i}.png")
    # Limits wide open: the check's own verdict on a random-weight graph is not what this pins.
    tr = Translator.from_checkpoint(model, device="cpu", precision="int8", calibration=cal,
                                    int8_limits=Int8Limits(min_psnr=0.0, max_mean_levels=255.0,
                                                           max_levels=255))
    assert tr.runtime.backend == "onnxruntime" and tr.runtime.precision == "int8"
    assert tr(Image.fromarray(_photo(41, 23, seed=3))).size == (41, 23)
    assert list((tmp_path / "cache" / "int8").glob("*.onnx"))


# ------------------------------------------------------------------------------------------ fallback


def test_no_convert_keeps_the_graph_for_onnx_runtime_alone(tmp_path):
    out = tmp_path / "m"
    r = _cli("import", "onnx", OPSET9, "--out", out, *OPSET9_FLAGS, "--no-convert")
    assert r.exit_code == 0, r.output
    assert "runs with ONNX Runtime, inference only" in r.output
    loaded = load_any_generator(out)
    assert loaded.kind == "onnx" and not isinstance(loaded.model, torch.nn.Module)  # distill/train refuse it
    rgb = _photo(33, 21, seed=6)
    got = np.asarray(Translator.from_checkpoint(out, device="cpu")(Image.fromarray(rgb)))
    assert got.shape == (21, 33, 3)
    data = tmp_path / "a"
    data.mkdir()
    Image.fromarray(rgb).save(data / "0.png")
    r = _cli("distill", "--teacher", out, "--out", tmp_path / "student", "--data-a", data, "--max-steps", "1",
             "--quiet", "--set", "distill.lambda_feature=0")
    assert r.exit_code != 0 and "cannot teach" in r.output and len(
        r.output.strip().splitlines()) == 1, r.output


def test_a_graph_onnx2torch_cannot_convert_falls_back_to_onnx_runtime(tmp_path, monkeypatch):
    def refuse(model):
        raise NotImplementedError("Converter is not implemented (Upsample)")

    monkeypatch.setattr(onnx_foreign, "convert_onnx_graph", refuse)
    result = import_weights("onnx", [OPSET9], tmp_path / "m", options=OnnxImportOptions(
        convention=OnnxConvention(layout="nchw", value_range="0,1", channels="bgr", multiple=2)))
    assert "not converted to PyTorch (NotImplementedError" in result.line()
    assert onnx_foreign.describe(tmp_path / "m")["backend"] == "onnxruntime"


def test_a_conversion_that_differs_from_onnx_runtime_is_refused_and_onnx_runtime_runs_the_file(tmp_path,
                                                                                                monkeypatch):
    real = onnx_foreign.convert_onnx_graph

    class Off(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x) + 0.02  # 2.55 levels in [-1, 1]

    monkeypatch.setattr(onnx_foreign, "convert_onnx_graph", lambda model: Off(real(model)))
    r = _cli("import", "onnx", ANIME, "--out", tmp_path / "m", *ANIME_FLAGS)
    assert r.exit_code == 0, r.output
    assert ("not converted to PyTorch (refused: it differs from ONNX Runtime by 2.55 levels on the probe "
            "images"
            in r.output)
    assert onnx_foreign.describe(tmp_path / "m")["backend"] == "onnxruntime"
    loaded = load_any_generator(tmp_path / "m")
    assert loaded.kind == "onnx" and not isinstance(loaded.model, torch.nn.Module)


# ------------------------------------------------------------------------------------------ hostile files


def _graph(inputs, outputs, nodes, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def _vi(name, dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _hostile(kind: str) -> bytes:
    if kind == "not onnx":
        return b"PK\x03\x04 this is a zip file, not a protobuf" * 10
    if kind == "truncated":
        data = ANIME.read_bytes()
        return data[: len(data) // 2]
    if kind == "rank 3 input":
        return _graph([_vi("x", ["h", "w", 3])], [_vi("y", ["h", "w", 3])],
                      [helper.make_node("Tanh", ["x"], ["y"])])
    if kind == "two inputs":
        return _graph([_vi("a", ["n", "h", "w", 3]), _vi("b", ["n", "h", "w", 3])],
                      [_vi("y", ["n", "h", "w", 3])], [helper.make_node("Add", ["a", "b"], ["y"])])
    if kind == "fixed spatial size":
        return _graph([_vi("x", [1, 256, 256, 3])], [_vi("y", [1, 256, 256, 3])],
                      [helper.make_node("Tanh", ["x"], ["y"])])
    if kind == "dynamic channels":
        return _graph([_vi("x", ["n", "h", "w", "c"])], [_vi("y", ["n", "h", "w", "c"])],
                      [helper.make_node("Tanh", ["x"], ["y"])])
    if kind in ("huge declared initializer", "short initializer"):
        w = TensorProto(name="w", data_type=TensorProto.FLOAT, raw_data=b"\0" * 16)
        w.dims.extend([100000, 100000] if kind.startswith("huge") else [1000])
        return _graph([_vi("x", ["n", "h", "w", 3])], [_vi("y", ["n", "h", "w", 3])],
                      [helper.make_node("Tanh", ["x"], ["y"])], inits=[w])
    if kind == "huge tensor in a subgraph":
        big = TensorProto(name="c", data_type=TensorProto.FLOAT, raw_data=b"\0" * 16)
        big.dims.extend([100000, 100000])
        branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=big)], "branch", [],
                                   [_vi("c", None)])
        cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
        return _graph([_vi("x", ["n", "h", "w", 3])], [_vi("y", ["n", "h", "w", 3])],
                      [helper.make_node("If", ["cond"], ["c"], then_branch=branch, else_branch=branch),
                       helper.make_node("Add", ["x", "c"], ["y"])], inits=[cond])
    if kind == "sparse initializer":
        values = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
        indices = helper.make_tensor("w_i", TensorProto.INT64, [1], [0])
        model = helper.make_model(helper.make_graph(
            [helper.make_node("Add", ["x", "w"], ["y"])], "g", [_vi("x", ["n", "h", "w", 3])],
            [_vi("y", ["n", "h", "w", 3])], sparse_initializer=[helper.make_sparse_tensor(values, indices,
                                                                                          [10**9])]),
            opset_imports=[helper.make_opsetid("", 13)])
        return model.SerializeToString()
    if kind == "external data":
        w = helper.make_tensor("w", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
        w.ClearField("float_data")
        w.data_location = TensorProto.EXTERNAL
        entry = w.external_data.add()
        entry.key, entry.value = "location", "../../../etc/passwd"
        return _graph([_vi("x", ["n", "h", "w", 3])], [_vi("y", ["n", "h", "w", 3])],
                      [helper.make_node("Add", ["x", "w"], ["y"])], inits=[w])
    if kind == "not an image generator":
        return _graph([_vi("x", ["n", "h", "w", 3])], [_vi("y", ["n", 3])],
                      [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, 2], keepdims=0)])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, reason", [
    ("not onnx", "not an ONNX model"),
    ("truncated", "not an ONNX model"),
    ("rank 3 input", "expected an image batch of rank 4"),
    ("two inputs", "expected one input image and one output, found 2 input(s)"),
    ("fixed spatial size", "is fixed at 256x256 pixels"),
    ("dynamic channels", "its channel dimension (nhwc) is c, expected 3"),
    ("huge declared initializer", "declares [100000, 100000] values, more than any ONNX file can hold"),
    ("short initializer", "declares [1000] (1000 values) but holds 4"),
    ("huge tensor in a subgraph", "declares [100000, 100000] values, more than any ONNX file can hold"),
    ("sparse initializer", "holds sparse initializers"),
    ("external data", "keeps its data in another file"),
    ("not an image generator", "not an image of the input's size"),
])
def test_hostile_files_are_refused_in_one_line_and_nothing_is_written(tmp_path, kind, reason):
    bad = tmp_path / "in" / "model.onnx"
    bad.parent.mkdir()
    bad.write_bytes(_hostile(kind))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = _cli("import", "onnx", bad, "--out", out_dir / "m", "--layout", "nhwc", "--range", "-1,1",
             "--channels", "rgb", "--multiple", "8")
    assert r.exit_code == 1, r.output
    assert reason in r.output and str(bad) in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert list(out_dir.iterdir()) == []


def test_convention_flags_are_checked_and_named(tmp_path):
    r = _cli("import", "onnx", ANIME, "--out", tmp_path / "m", "--layout", "nhwc", "--range", "-1,1")
    assert r.exit_code == 2 and "--channels, --multiple" in r.output
    r = _cli("import", "onnx", ANIME, "--out", tmp_path / "m", *ANIME_FLAGS[:-1], "250")
    assert r.exit_code == 2 and "--min-side: min_side 250 is not a multiple of multiple 8" in r.output
    r = _cli("import", "onnx", ANIME, "--out", tmp_path / "m", *ANIME_FLAGS[:6], "--multiple", "0")
    assert r.exit_code == 2 and "--multiple" in r.output
    r = _cli("import", "official", ANIME, "--out", tmp_path / "m", "--layout", "nhwc")
    assert r.exit_code == 2 and "--layout applies to import onnx only" in r.output
    assert not (tmp_path / "m").exists()
    with pytest.raises(ForeignWeightsError, match="import format onnx needs its options"):
        import_weights("onnx", [ANIME], tmp_path / "m")
    with pytest.raises(ForeignWeightsError, match="import format official takes no options"):
        import_weights("official", [ANIME], tmp_path / "m",
                       options=OnnxImportOptions(convention=ANIME_CONVENTION))


# ------------------------------------------------------------------------------------------ PyTorch uses


def test_a_converted_import_teaches_a_distilled_student(tmp_path):
    model = tmp_path / "m"
    assert _cli("import", "onnx", OPSET9, "--out", model, *OPSET9_FLAGS).exit_code == 0
    data = tmp_path / "a"
    data.mkdir()
    for i in range(2):
        Image.fromarray(_photo(40, 40, seed=20 + i)).save(data / f"{i}.png")
    r = _cli("distill", "--teacher", model, "--out", tmp_path / "student", "--student", "animeganv2",
             "--student-ngf", "4", "--max-steps", "1", "--quiet", "--data-a", data, "--set",
             "data.n_samples=2",
             "--set", "train.tensorboard=false", "--set", "data.crop_size=32", "--set", "data.load_size=32",
             "--set", "distill.lambda_feature=0")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "student" / "config.json").is_file()


def test_export_by_tracing_is_refused_where_it_would_freeze_the_minimum_side_padding(anime, tmp_path):
    r = _cli("export", "--checkpoint", anime, "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert r.exit_code == 1 and "generator.onnx is the model as ONNX already" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("scales", [(1, 1, 2, 2), (1, 1, 1.5, 3)])
def test_asymmetric_bilinear_resize_matches_onnx_runtime(scales):
    """TF-1's resize_images default (tf2onnx: Resize linear, asymmetric), which PyTorch's interpolate
    lacks."""
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                            coordinate_transformation_mode="asymmetric")
    s = helper.make_tensor("scales", TensorProto.FLOAT, [4], list(scales))
    data = _graph([_vi("x", ["n", "c", "h", "w"])], [_vi("y", None)], [node], inits=[s])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 5, 7)).astype(np.float32)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    got = AsymmetricLinearResize()(torch.from_numpy(x), None,
                                   torch.tensor(scales, dtype=torch.float32)).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-5


def test_auto_and_int8_run_the_folders_own_wrapped_graph(anime):
    """runtime.onnx_cached (--precision auto's ONNX Runtime path, and int8's fp32 source) takes the folder's
    generator.onnx instead of re-exporting the converted module."""
    module = load_any_generator(anime).model
    session, path, exported = onnx_cached(module, size_multiple=8)
    assert session.input_name == "image"
    assert path == anime / "generator.onnx" and not exported


def test_a_changed_or_tampered_folder_is_refused_in_one_line(anime, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(anime, copy)
    with open(copy / "generator.onnx", "ab") as f:
        f.write(b"\0")
    r = _cli("translate", "--checkpoint", copy, ANIME, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "generator.onnx: missing or changed since it was imported" in r.output
    shutil.rmtree(copy)
    shutil.copytree(anime, copy)
    doc = (copy / "foreign.json").read_text().replace('"layout": "nhwc"', '"layout": "nhcw"')
    (copy / "foreign.json").write_text(doc)
    with pytest.raises(Exception, match="foreign.json: unreadable .*layout 'nhcw'"):
        load_any_generator(copy)
