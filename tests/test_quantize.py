"""int8: ONNX Runtime static quantization, the image-level check against fp32, its refusal, the cache and
auto."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cyclegan import runtime as rt
from cyclegan.cli import main
from cyclegan.config import GeneratorConfig
from cyclegan.errors import DataError, ExportError, TranslateError
from cyclegan.export import export_module
from cyclegan.modelfile import INT8_METADATA_KEY, ModelInfo, OnnxGenerator, load_any_generator
from cyclegan.networks import build_generator
from cyclegan.quantize import (
    DEFAULT_LIMITS,
    ImageCheck,
    Int8Limits,
    calibration_for,
    compare_images,
    equalize_for_norm,
    export_int8,
    fp32_nodes,
    load_calibration,
    read_int8_report,
)
from cyclegan.synthetic import make_scene
from cyclegan.translate import Translator

pytest.importorskip("onnxruntime")  # the `onnx` extra (in `dev`)


def _generator() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(GeneratorConfig(ngf=8, n_blocks=2)).eval()


def _badly_quantizing() -> torch.nn.Module:
    """A generator whose output convolution has 30 times the gain: the rounding of the int8 layers
    before it reaches the (fp32) Tanh amplified, pushing pixels across its steep middle.
    (A channel 10^4 times larger than the others ahead of an instance norm no longer works:
    equalize_for_norm evens it out.)"""
    net = _generator()
    with torch.no_grad():
        net.decoder[3].weight *= 30
        net.decoder[3].bias *= 30
    return net


def _outlier_channel() -> torch.nn.Module:
    """The same outputs in fp32, but one channel of a residual conv 10^4 times larger than the rest:
    instance norm hides it in fp32, while one 8-bit range for the whole tensor would crush the others."""
    net = _generator()
    conv = net.transformer[0].block[1]  # the first residual block's first convolution
    with torch.no_grad():
        conv.weight[0] *= 1e4
        conv.bias[0] *= 1e4
    return net


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(make_scene(rng, 48, "photo")).save(folder / f"{i:02d}.png")
    return folder


def _info(net) -> ModelInfo:
    return ModelInfo(direction="a2b", size_multiple=int(net.size_multiple), config=None)


def test_int8_round_trip_passes_for_a_well_behaved_model(photos, tmp_path):
    net = _generator()
    cal = load_calibration(photos, size=48, size_multiple=net.size_multiple)
    out = tmp_path / "g_int8.onnx"
    result = export_int8(net, out=out, info=_info(net), calibration=cal)
    check = result.report.check
    assert check.images == 6 and check.passed(DEFAULT_LIMITS), check.line()
    assert out.is_file() and (tmp_path / "g_int8.onnx.sha256").is_file()
    # no temp files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g_int8.onnx", "g_int8.onnx.sha256"]
    # The image enters and leaves in fp32; the residual convolutions run in int8.
    kept = result.report.kept_fp32
    assert any("tanh" in n.lower() for n in kept) and result.report.int8_nodes >= 4

    loaded = load_any_generator(out)
    assert loaded.kind == "onnx" and loaded.model.is_int8 and loaded.info.direction == "a2b"
    report = read_int8_report(loaded.model.metadata())
    assert report is not None and report.check == check
    translator = Translator.from_checkpoint(out, device="cpu")
    assert translator.runtime.precision == "int8"
    x = np.asarray(Image.open(photos / "00.png"))
    fp32 = Translator(model=net, device="cpu", precision="fp32")(x).astype(int)
    diff = np.abs(translator(x).astype(int) - fp32)
    assert diff.mean() <= DEFAULT_LIMITS.max_mean_levels and diff.max() <= DEFAULT_LIMITS.max_levels


def test_a_model_that_quantizes_badly_is_refused_and_nothing_is_written(photos, tmp_path):
    bad = _badly_quantizing()
    cal = load_calibration(photos, size=48, size_multiple=bad.size_multiple)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"too far from fp32 .*PSNR .* dB < 35.*nothing was written"):
        export_int8(bad, out=out, info=_info(bad), calibration=cal)
    assert list(tmp_path.iterdir()) == []


def test_equalization_is_exact_in_fp32_and_rescues_an_outlier_channel(photos, tmp_path):
    onnx = pytest.importorskip("onnx")
    net, outlier = _generator(), _outlier_channel()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # the same model in fp32 ...
        torch.testing.assert_close(outlier(x), net(x), atol=1e-3, rtol=0)
    export_module(outlier, fmt="onnx", out=tmp_path / "o.onnx", info=_info(outlier))
    model = onnx.load(str(tmp_path / "o.onnx"))
    images = list(load_calibration(photos, size=48, size_multiple=4).arrays())
    # 2 encoder + 2x2 residual
    assert equalize_for_norm(model, "image", images, skip=set(fp32_nodes(model))) == 6
    onnx.save(model, str(tmp_path / "eq.onnx"))
    before, after = OnnxGenerator(path=tmp_path / "o.onnx"), OnnxGenerator(path=tmp_path / "eq.onnx")
    xt = torch.from_numpy(images[0])
    torch.testing.assert_close(after(xt), before(xt), atol=1e-4, rtol=0)  # 1/80 of an 8-bit level
    # ... and in int8 the outlier no longer crushes its neighbours.
    cal = load_calibration(photos, size=48, size_multiple=4)
    check = export_int8(outlier, out=tmp_path / "o8.onnx", info=_info(outlier), calibration=cal).report.check
    assert check.passed(DEFAULT_LIMITS), check.line()


def test_check_limits_and_report_line():
    ref = [np.full((3, 16, 16), 100, np.uint8), np.full((3, 16, 16), 50, np.uint8)]
    cand = [ref[0].copy(), ref[1].copy()]
    cand[1][0, 0, 0] = 90  # one pixel 40 levels off
    check = compare_images(ref, cand, size=16)
    assert check.max_levels == 40 and check.psnr_min < check.psnr_mean == pytest.approx(
        (100 + check.psnr_min) / 2)
    assert check.passed(DEFAULT_LIMITS)
    assert check.failures(Int8Limits(max_levels=39)) == ["max difference 40 levels > 39"]
    assert "mean difference" in check.failures(Int8Limits(max_mean_levels=0.01))[0]
    nan = ImageCheck(images=1, size=4, psnr_min=float("nan"), psnr_mean=0, mean_levels=0, max_levels=0)
    assert not nan.passed(DEFAULT_LIMITS)


def test_translate_int8_is_cached_refused_when_bad_and_chosen_by_auto_only_when_checked(photos, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    net = _generator()
    int8 = Translator(model=net, precision="int8", calibration=photos, threads=1)
    assert int8.runtime.backend == "onnxruntime" and int8.device.type == "cpu"
    assert "quantized and cached" in int8.runtime.reason
    again = Translator(model=net, precision="int8", calibration=photos, threads=1)
    assert again.runtime.precision == "int8" and "; cached at" in again.runtime.reason
    auto = Translator(model=net, precision="auto", threads=1)
    assert auto.runtime.precision == "int8" and "int8 model checked" in auto.runtime.reason

    bad = _badly_quantizing()
    with pytest.raises(TranslateError, match="too far from fp32"):
        Translator(model=bad, precision="int8", calibration=photos, threads=1)
    assert len(list((tmp_path / "cache" / "int8").glob("*.onnx"))) == 2  # kept, so a rerun fails at once
    assert Translator(model=bad, precision="auto", threads=1).runtime.precision != "int8"
    with pytest.raises(TranslateError, match="int8 runs on the CPU"):
        Translator(model=net, precision="int8", device=torch.device("meta"))  # any non-CPU device


def test_calibration_comes_from_the_direction_source_domain(tiny_config, tiny_dataroot, tmp_path):
    cfg = tiny_config()
    assert calibration_for(cfg, "a2b", None) == tiny_dataroot / "trainA"
    assert calibration_for(cfg, "b2a", None) == tiny_dataroot / "trainB"
    assert calibration_for(cfg, "a2b", tmp_path) == tmp_path  # --calibration wins
    with pytest.raises(DataError, match="records no training data|does not record"):
        calibration_for(None, "a2b", None)
    with pytest.raises(DataError, match="no such folder"):
        calibration_for(cfg, "a2b", tmp_path / "missing")
    cal = load_calibration(tiny_dataroot / "trainA", size=30, size_multiple=4, count=5)
    assert len(cal.items) == 5 and cal.size == 32  # rounded up to the multiple
    arrays = list(cal.arrays())
    assert arrays[0].shape == (1, 3, 32, 32) and -1 <= arrays[0].min() and arrays[0].max() <= 1
    assert load_calibration(tiny_dataroot / "trainA", size=30, size_multiple=4, count=6).digest != cal.digest


def test_export_int8_cli_reports_the_check_and_refuses_over_the_limits(random_run, photos, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    run = random_run(3)
    out = tmp_path / "int8.onnx"
    args = ["export", "--checkpoint", str(run), "--int8", "--calibration", str(photos), "--out", str(out)]
    strict = CliRunner().invoke(main, [*args, "--int8-min-psnr", "99"])
    assert strict.exit_code == 1 and not out.exists()
    assert "error:" in strict.output and "PSNR" in strict.output and "< 99" in strict.output
    ok = CliRunner().invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert "onnx int8" in ok.output and "calibration image(s)" in ok.output
    meta = OnnxGenerator(path=out).metadata()
    assert json.loads(meta[INT8_METADATA_KEY])["calibration"]["images"] == 6
    # export --int8 also registers the model where --precision auto looks for one.
    loaded = load_any_generator(run)
    assert rt.cached_int8(loaded.model, size_multiple=loaded.info.size_multiple,
                          limits=DEFAULT_LIMITS) is not None
    wrong = CliRunner().invoke(main, [*args[:-2], "--out", str(tmp_path / "x.pt"), "--format", "torchscript"])
    assert wrong.exit_code == 1 and "--int8 is an ONNX export" in wrong.output


def test_a_unet_with_skip_additions_quantizes_and_leaves_the_working_directory_clean(photos, tmp_path,
                                                                                     monkeypatch):
    """ORT's symbolic shape inference cannot prove a U-Net's skip additions equal and, when it gives up,
    saves its half-inferred model into the current directory; White-box's generator is such a U-Net."""
    torch.manual_seed(0)
    net = build_generator(GeneratorConfig(name="whitebox", ngf=4)).eval()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cal = load_calibration(photos, size=48, size_multiple=net.size_multiple)
    out = tmp_path / "wb_int8.onnx"
    result = export_int8(net, out=out, info=_info(net), calibration=cal)
    assert out.is_file() and result.report.int8_nodes >= 1
    assert list(cwd.iterdir()) == []


def test_a_group_norm_generator_quantizes(photos, tmp_path):
    """GroupNorm exports as Reshape -> InstanceNormalization sharing one scale constant across every
    norm (the AnimeGANv2 generators); ONNX Runtime's quantizer refused that shared constant."""
    torch.manual_seed(0)
    net = build_generator(GeneratorConfig(name="animeganv2", ngf=16)).eval()
    cal = load_calibration(photos, size=48, size_multiple=net.size_multiple)
    result = export_int8(net, out=tmp_path / "ag_int8.onnx", info=_info(net), calibration=cal)
    check = result.report.check
    assert result.report.int8_nodes >= 4 and check.passed(DEFAULT_LIMITS), check.line()
