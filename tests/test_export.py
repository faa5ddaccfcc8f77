"""Export: ONNX (dynamic shapes, checked with ONNX Runtime), TorchScript, plain safetensors; reading them
back."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cyclegan import export as export_mod
from cyclegan.cli import main
from cyclegan.errors import CheckpointError, CycleGANError, ExportError
from cyclegan.export import PARITY_TOLERANCE, export_generator
from cyclegan.modelfile import load_any_generator
from cyclegan.synthetic import make_scene
from cyclegan.translate import Translator


@pytest.fixture(scope="module")
def run_dir(random_run) -> Path:
    return random_run(5)


@pytest.fixture(scope="module")
def onnx_file(run_dir, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("onnx") / "tiny_b2a.onnx"
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(run_dir), "--direction", "b2a",
                                  "--format", "onnx", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "max abs diff vs PyTorch" in r.output
    return out


def _open(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(make_scene(np.random.default_rng(seed), max(w, h), "photo")[:h, :w])


def _reference(run_dir: Path, direction: str) -> Translator:
    return Translator.from_checkpoint(run_dir, direction=direction, device="cpu")


def test_onnx_has_dynamic_batch_height_width_and_metadata(onnx_file):
    import onnx

    model = onnx.load(str(onnx_file))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # batch, 3, height, width
    meta = json.loads({p.key: p.value for p in model.metadata_props}["cyclegan"])
    assert meta["direction"] == "b2a" and meta["size_multiple"] == 4
    assert meta["config"]["model"]["generator"]["ngf"] == 8


def test_onnx_translator_matches_pytorch(run_dir, onnx_file):
    onnx_t = Translator.from_checkpoint(onnx_file, device="cpu")
    assert onnx_t.direction == "b2a"
    torch_t = _reference(run_dir, "b2a")
    imgs = [_photo(45, 31), _photo(45, 31, seed=1), _photo(64, 20, seed=2)]  # odd sizes, batch of two
    for a, b in zip(onnx_t(imgs), torch_t(imgs)):
        assert a.size == b.size
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    # Tiling runs through the same code for ONNX (per-tile statistics there, so only shape checked).
    tiled = Translator.from_checkpoint(onnx_file, device="cpu", tile=32)
    assert tiled(_photo(70, 50)).size == (70, 50)
    with pytest.raises(CheckpointError, match="only the b2a generator"):
        Translator.from_checkpoint(onnx_file, direction="a2b", device="cpu")


def test_cli_translate_with_onnx_model(onnx_file, tmp_path):
    _photo(33, 17).save(tmp_path / "p.png")
    r = CliRunner().invoke(main, ["translate", "--model", str(onnx_file), str(tmp_path / "p.png"),
                                  "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert _open(tmp_path / "out" / "p.png").size == (33, 17)
    r = CliRunner().invoke(main, ["translate", "--model", str(onnx_file), str(tmp_path / "p.png"),
                                  "--out", str(tmp_path / "out2"), "--precision", "bf16"])
    assert r.exit_code == 1 and "fp32" in r.output


def test_torchscript_parity(run_dir, tmp_path):
    result = export_generator(run_dir, fmt="torchscript", out=tmp_path / "g.pt")
    assert result.max_abs_diff <= PARITY_TOLERANCE and (tmp_path / "g.pt").is_file()
    ts = Translator.from_checkpoint(tmp_path / "g.pt", device="cpu")
    img = _photo(50, 27)
    a, b = np.asarray(ts(img), dtype=int), np.asarray(_reference(run_dir, "a2b")(img), dtype=int)
    assert np.abs(a - b).max() <= 1


def test_safetensors_export_folder_and_file(run_dir, tmp_path):
    out = tmp_path / "shared_model"
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(run_dir), "--format", "safetensors",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generator.safetensors", "meta.json"]
    img = _photo(41, 23)
    ref = np.asarray(_reference(run_dir, "a2b")(img))
    for source in (out, out / "generator.safetensors"):
        got = np.asarray(Translator.from_checkpoint(source, device="cpu")(img))
        assert np.array_equal(got, ref)
    # Exports of exports work too (safetensors -> TorchScript), and a generator file taken straight
    # out of a checkpoint folder is readable through the config.json next to it.
    export_generator(out, fmt="torchscript", out=tmp_path / "again.pt")
    loaded = load_any_generator(run_dir / "checkpoints" / "latest" / "G_B.safetensors")
    assert loaded.info.direction == "b2a"


def test_exported_files_follow_the_umask(run_dir, tmp_path):
    # safetensors' own save_file creates its file 0600 whatever the umask; exports are for sharing.
    old = os.umask(0o022)
    try:
        export_generator(run_dir, fmt="safetensors", out=tmp_path / "shared")
        export_generator(run_dir, fmt="torchscript", out=tmp_path / "g.pt")
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    assert modes == {"shared": 0o755, "shared/config.json": 0o644, "shared/generator.safetensors": 0o644,
                     "shared/meta.json": 0o644, "g.pt": 0o644,
                     "g.pt.sha256": 0o644}, {k: oct(v) for k, v in modes.items()}


def test_save_safetensors_atomic_follows_the_umask_and_round_trips(tmp_path):
    import torch
    from safetensors import safe_open

    from cyclegan.fileio import save_safetensors_atomic

    old = os.umask(0o027)
    try:
        path = save_safetensors_atomic({"w": torch.arange(6.0).view(2, 3)}, tmp_path / "x.safetensors",
                                       metadata={"k": "v"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v"} and torch.equal(f.get_tensor("w"), torch.arange(6.0).view(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temp file left


def test_existing_outputs_are_not_replaced_without_overwrite(run_dir, tmp_path):
    target = tmp_path / "g.pt"
    target.write_bytes(b"precious")
    with pytest.raises(ExportError, match="already exists"):
        export_generator(run_dir, fmt="torchscript", out=target)
    assert target.read_bytes() == b"precious"
    export_generator(run_dir, fmt="torchscript", out=target, overwrite=True)
    assert target.read_bytes() != b"precious"

    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("do not delete")
    with pytest.raises(ExportError, match="not a cyclegan safetensors export"):
        export_generator(run_dir, fmt="safetensors", out=folder, overwrite=True)
    assert (folder / "thesis.txt").is_file()
    with pytest.raises(ExportError, match="would overwrite"):
        export_generator(run_dir, fmt="safetensors", out=run_dir, overwrite=True)


def test_mismatch_fails_loudly_and_writes_nothing(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "max_abs_diff", lambda *a, **k: 0.05)
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(run_dir), "--format", "torchscript",
                                  "--out", str(tmp_path / "bad.pt")])
    assert r.exit_code == 1
    assert "disagrees with PyTorch (max abs diff 0.05 > 0.001)" in r.output
    assert list(tmp_path.iterdir()) == []


def test_unusable_model_files_are_reported(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"garbage")
    (tmp_path / "x.bin").write_bytes(b"garbage")
    for name, match in (("x.onnx", "not a loadable ONNX model"), ("x.bin", "unknown model file type"),
                        ("missing", "no such run")):
        with pytest.raises(CheckpointError, match=match):
            load_any_generator(tmp_path / name)


_ALLOC_FAILURE = "[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: not enough memory"


def _one_error_line(r, where) -> str:
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert str(where) in lines[0] and "not enough memory" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("error", [RuntimeError(_ALLOC_FAILURE), MemoryError()])
def test_a_generator_too_large_to_build_is_one_line(run_dir, tmp_path, monkeypatch, error):
    # A config.json asking for ngf=131072 makes the build try to allocate ~1 TB; every command that
    # loads a model names the model and the reason on one line instead of a 50-line traceback.
    import torch

    import cyclegan.networks

    shared = tmp_path / "shared"
    export_generator(run_dir, fmt="safetensors", out=shared)
    script = tmp_path / "g.pt"
    export_generator(run_dir, fmt="torchscript", out=script)

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(cyclegan.networks, "build_generator", boom)
    monkeypatch.setattr(torch.jit, "load", boom)
    photo = tmp_path / "p.png"
    _photo(16, 16).save(photo)
    cli = CliRunner()
    for model in (run_dir, shared, script):
        _one_error_line(cli.invoke(main, ["translate", "--checkpoint", str(model), str(photo), "--out",
                                          str(tmp_path / "o"), "--device", "cpu", "--quiet"]), model)
    for model in (run_dir, shared):
        _one_error_line(cli.invoke(main, ["export", "--checkpoint", str(model), "--format", "torchscript",
                                          "--out", str(tmp_path / "again.pt")]), model)
    _one_error_line(cli.invoke(main, ["evaluate", "--checkpoint", str(run_dir), "--no-inception",
                                      "--device", "cpu", "--quiet"]), run_dir)
    with pytest.raises(CheckpointError, match="not enough memory"):
        Translator.from_checkpoint(run_dir, device="cpu")
    assert not (tmp_path / "o").exists() and not (tmp_path / "again.pt").exists()


def test_export_refuses_a_mismatched_extension(run_dir, tmp_path):
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(run_dir), "--format", "onnx",
                                  "--out", str(tmp_path / "model.pt")])
    assert r.exit_code == 1 and "must end in .onnx" in r.output and not (tmp_path / "model.pt").exists()


def test_onnx_export_honours_an_old_opset(run_dir, tmp_path):
    import onnx

    out = tmp_path / "m13.onnx"
    r = CliRunner().invoke(main,
                           ["export", "--checkpoint", str(run_dir), "--format", "onnx", "--out", str(out),
                                  "--opset", "13"])
    assert r.exit_code == 0, r.output
    assert [o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")] == [13]


def test_safetensors_export_carries_its_hashes(run_dir, tmp_path):
    out = tmp_path / "shared"
    export_generator(run_dir, fmt="safetensors", out=out)
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["sha256"]) == {"generator.safetensors", "config.json"}
    load_any_generator(out)  # intact: loads
    export_generator(run_dir, fmt="safetensors", out=out, overwrite=True)  # our own export: replaceable
    weights = out / "generator.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64)  # flip bytes inside the tensor data, not the header
    weights.write_bytes(bytes(data))
    with pytest.raises(CycleGANError, match="generator.safetensors"):
        load_any_generator(out)


@pytest.mark.parametrize("name", ["g.onnx", "g.pt"])
def test_single_file_exports_carry_a_checksum_beside_them(run_dir, tmp_path, name):
    out = tmp_path / name
    export_generator(run_dir, fmt="onnx" if name.endswith(".onnx") else "torchscript", out=out)
    sidecar = tmp_path / f"{name}.sha256"
    digest, listed = sidecar.read_text().split()
    assert listed == name and len(digest) == 64
    load_any_generator(out)
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    out.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{name}.sha256"):
        load_any_generator(out)
