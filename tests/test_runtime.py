"""cyclegan.runtime: precision="auto" choosing ONNX Runtime, its cache and fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cyclegan import runtime as rt
from cyclegan.config import GeneratorConfig
from cyclegan.networks import build_generator
from cyclegan.translate import Translator


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_generator(GeneratorConfig(ngf=4, n_blocks=1)).eval()


@pytest.fixture
def no_bf16(monkeypatch):
    """A CPU without native bf16: the case where auto should reach for ONNX Runtime."""
    pytest.importorskip("onnxruntime")  # the `onnx` extra (in `dev`)
    monkeypatch.setattr(rt, "native_bf16", lambda device: False)


def _image(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------- ONNX Runtime


def test_auto_without_bf16_runs_onnxruntime_within_a_level_of_fp32(net, no_bf16):
    auto = Translator(model=net, device="cpu", precision="auto", tile="off")
    assert auto.runtime.backend == "onnxruntime" and auto.precision == "fp32"
    assert "no native bf16" in auto.runtime.reason
    reference = Translator(model=net, device="cpu", precision="fp32", tile="off")
    for seed, (h, w) in enumerate([(40, 56), (33, 70)]):  # any size, padded inside
        img = _image(seed, h, w)
        diff = np.abs(auto(img).astype(int) - reference(img).astype(int))
        assert diff.max() <= 1


def test_onnx_cache_is_reused_and_keyed_by_the_weights(net, no_bf16, monkeypatch, tmp_path):
    monkeypatch.setenv(rt.CACHE_ENV, str(tmp_path))
    first = Translator(model=net, device="cpu", precision="auto")
    assert "exported and cached" in first.runtime.reason
    cached = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and not list((tmp_path / "onnx").glob("*.tmp*"))

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model")

    monkeypatch.setattr(rt, "export_module", no_export)
    again = Translator(model=net, device="cpu", precision="auto")
    assert again.runtime.backend == "onnxruntime" and "cached at" in again.runtime.reason
    monkeypatch.undo()
    monkeypatch.setattr(rt, "native_bf16", lambda device: False)
    monkeypatch.setenv(rt.CACHE_ENV, str(tmp_path))

    with torch.no_grad():  # other weights: another cache entry, and its own output
        next(net.parameters()).add_(0.5)
    changed = Translator(model=net, device="cpu", precision="auto")
    assert "exported and cached" in changed.runtime.reason
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2


def test_a_corrupt_cache_entry_is_rebuilt(net, no_bf16, monkeypatch, tmp_path):
    monkeypatch.setenv(rt.CACHE_ENV, str(tmp_path))
    # The entry this model's export would write, written corrupt (e.g. truncated by a full disk)
    # without paying for a first export.
    entry = tmp_path / "onnx" / f"{rt._module_key(net, net.size_multiple)}.onnx"
    entry.parent.mkdir()
    entry.write_bytes(b"\x08\x07\x12\x07pytorch" * 6)
    rebuilt = Translator(model=net, device="cpu", precision="auto")
    assert rebuilt.runtime.backend == "onnxruntime" and "exported and cached" in rebuilt.runtime.reason
    assert list((tmp_path / "onnx").glob("*.onnx")) == [entry] and entry.stat().st_size > 1000  # redone there
    img = _image(3)
    assert np.abs(rebuilt(img).astype(int) - Translator(model=net, device="cpu")(img).astype(int)).max() <= 1


def test_auto_falls_back_to_pytorch_fp32_with_the_reason(net, no_bf16, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv(rt.CACHE_ENV, str(blocker))  # the cache cannot be created
    unwritable = Translator(model=net, device="cpu", precision="auto")
    assert (unwritable.runtime.backend, unwritable.precision) == ("torch", "fp32")
    assert "ONNX Runtime not used" in unwritable.runtime.reason

    def broken(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : something odd\nsecond line")

    monkeypatch.setenv(rt.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(rt, "onnx_cached", broken)  # any failure of export or ORT: PyTorch still works
    odd = Translator(model=net, device="cpu", precision="auto")
    assert odd.runtime.backend == "torch" and "RuntimeError: [ONNXRuntimeError]" in odd.runtime.reason
    assert "second line" not in odd.runtime.reason

    monkeypatch.setattr(rt, "onnx_available", lambda: False)
    missing = Translator(model=net, device="cpu", precision="auto")
    assert missing.runtime.backend == "torch" and "onnxruntime not installed" in missing.runtime.reason

    # channels_last and compile are PyTorch options: asking for one keeps PyTorch
    monkeypatch.setattr(rt, "onnx_available", lambda: True)
    assert Translator(model=net, device="cpu", precision="auto",
                      channels_last=True).runtime.backend == "torch"


def test_tiles_still_share_the_whole_image_statistics_under_onnxruntime(net, no_bf16):
    """Tiled passes go through PyTorch (whole-image instance-norm statistics); whole ones through ORT."""
    auto = Translator(model=net, device="cpu", precision="auto", tile=32, tile_overlap=8)
    torch_only = Translator(model=net, device="cpu", precision="fp32", tile=32, tile_overlap=8)
    assert auto.runtime.backend == "onnxruntime"
    img = _image(5, 72, 88)
    np.testing.assert_array_equal(auto(img), torch_only(img))


def test_translate_cli_prints_the_runtime_it_chose(no_bf16, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from cyclegan.cli import main
    from cyclegan.config import build_config
    from cyclegan.export import export_module
    from cyclegan.modelfile import ModelInfo

    cfg = build_config(preset="tiny")
    net = build_generator(cfg.model.generator)
    model = tmp_path / "model"
    export_module(net, fmt="safetensors", out=model,
                  info=ModelInfo(direction="a2b", size_multiple=net.size_multiple, config=cfg))
    Image.fromarray(_image(1)).save(tmp_path / "in.png")
    args = ["translate", str(tmp_path / "in.png"), "--model", str(model), "--threads", "1", "--out"]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "auto.png")])
    assert result.exit_code == 0, result.output
    assert "runtime: onnxruntime fp32 (no native bf16 on cpu" in result.output
    result = CliRunner().invoke(main, [*args, str(tmp_path / "fp32.png"), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    auto, fp32 = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("auto", "fp32"))
    assert np.abs(auto - fp32).max() <= 1


def test_the_onnx_cache_drops_the_least_recently_used_models(tmp_path):
    import os

    folder = tmp_path / "onnx"
    folder.mkdir()
    for name in ("old", "older", "recent", "new"):
        (folder / f"{name}.onnx").write_bytes(b"x" * 100)
    for name, age in (("older", 400), ("old", 300), ("recent", 100)):
        t = (folder / f"{name}.onnx").stat().st_mtime - age
        os.utime(folder / f"{name}.onnx", (t, t))
    rt._trim_cache(folder, keep=folder / "new.onnx", max_bytes=250)
    assert sorted(p.name for p in folder.iterdir()) == ["new.onnx", "recent.onnx"]
    rt._trim_cache(folder, keep=folder / "new.onnx", max_bytes=10)  # the model in use always stays
    assert sorted(p.name for p in folder.iterdir()) == ["new.onnx"]
