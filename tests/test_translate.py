"""Translation: exact sizes, padding, tiling (equivalence and seams), alpha/grayscale, Python API, CLI, video.

Every model here is a tiny randomly initialised generator made in the test; nothing is downloaded.
"""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cyclegan.cli import main
from cyclegan.cli.flags import as_flags
from cyclegan.config import build_config
from cyclegan.errors import CheckpointError, TranslateError
from cyclegan.networks import build_generator
from cyclegan.synthetic import make_bad_files, make_odd_images, make_scene
from cyclegan.translate import (
    TranslateOptions,
    Translator,
    blend_weights,
    choose_backend,
    parse_bytes,
    parse_size,
    parse_tile,
    tile_starts,
)

# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def run_dir(random_run) -> Path:
    """A run folder holding checkpoints/latest of the tiny recipe, randomly initialised."""
    return random_run(3)


@pytest.fixture(scope="module")
def translator(run_dir) -> Translator:
    return Translator.from_checkpoint(run_dir, device="cpu")


def _generator(norm: str) -> tuple[torch.nn.Module, object]:
    # Kaiming init gives a random generator real spatial structure (the default N(0, 0.02) init of a
    # norm-free net outputs an almost constant image, which would make any tiling test vacuous).
    cfg = build_config(preset="tiny", sets=[f"model.generator.norm={norm}", "model.init=kaiming"])
    torch.manual_seed(0)
    return build_generator(cfg.model.generator, init=cfg.model.init).eval(), cfg


def _scene(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A natural-looking uint8 image [1, 3, h, w] (gradients, shapes, noise)."""
    arr = make_scene(np.random.default_rng(seed), max(h, w, 8), "photo")[:h, :w]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].contiguous()


def _open(path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(make_scene(np.random.default_rng(seed), max(w, h, 8), "photo")[:h, :w])


def _cli(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


# ------------------------------------------------------------------------------------ pure helpers


def test_parsers():
    assert parse_tile("auto") == "auto" and parse_tile("OFF") == "off" and parse_tile("256") == 256
    assert parse_size("512") == (512, 512) and parse_size("640x480") == (640, 480)
    assert parse_bytes("2G") == 2 * 2**30 and parse_bytes("512M") == 512 * 2**20
    for bad, fn in (("huge", parse_tile), ("8", parse_tile), ("12y", parse_size), ("lots", parse_bytes)):
        with pytest.raises(TranslateError):
            fn(bad)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"max_side": 0}, "max_side must be >= 1, got 0"),
        ({"tile_overlap": -1}, "tile_overlap must be >= 0, got -1"),
        ({"tile": "8"}, "tile '8': tiles must be at least 16 pixels"),
        ({"size": "12y"}, "size '12y': expected N or WIDTHxHEIGHT"),
        ({"memory_budget": "lots"}, "memory_budget 'lots': expected a size such as 2G or 512M"),
        ({"precision": "fp64"}, "precision 'fp64': choose from auto, fp32"),
    ],
)
def test_options_errors_name_the_parameter_not_a_flag(fields, message):
    with pytest.raises(TranslateError) as caught:
        TranslateOptions(**fields)
    assert str(caught.value).startswith(message) and "--" not in str(caught.value)
    with pytest.raises(TranslateError, match=f"^{message.split()[0]}"):  # same check through the model path
        Translator(model=_generator("none")[0], device="cpu", **fields)


def test_options_parse_their_textual_forms_and_are_frozen():
    opts = TranslateOptions(tile="512", size="640x480", memory_budget="2G")
    assert (opts.tile, opts.size, opts.memory_budget) == (512, (640, 480), 2 * 2**30)
    with pytest.raises(AttributeError):
        opts.batch_size = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        TranslateOptions(8)  # type: ignore[misc]  # keyword-only


def test_cli_maps_parameter_names_to_flags_in_one_place():
    assert as_flags("batch_size must be >= 1, got 0") == "--batch-size must be >= 1, got 0"
    assert as_flags("device cuda: no CUDA device") == "--device cuda: no CUDA device"
    assert (as_flags("m.onnx (onnx): precision=bf16 needs a PyTorch model; use device=cpu")
            == "m.onnx (onnx): --precision bf16 needs a PyTorch model; use --device cpu")
    # prose, dotted config keys and unrelated parameters are left as they are
    for text in ("calibration needs at least one image", "data.batch_size: must be >= 1",
                 "model.tile=3 is bad"):
        assert as_flags(text) == text


def test_backend_choice_is_a_separate_step_and_shared_by_option_changes():
    net, cfg = _generator("instance")
    opts = TranslateOptions(precision="fp32", tile="off", batch_size=2)
    backend = choose_backend(net, size_multiple=net.size_multiple, options=opts, device="cpu", config=cfg)
    assert backend.runtime.line() == "torch fp32 (as requested)" and backend.norms  # instance norms found
    given = Translator(model=net, options=opts, backend=backend, device="cpu", config=cfg)
    chosen = Translator(model=net, options=opts, device="cpu", config=cfg)
    x = _scene(40, 56)
    assert torch.equal(given.translate_tensor(x), chosen.translate_tensor(x))
    # keywords override fields of options; with_options keeps the model and runtime
    assert Translator(model=net, options=opts, batch_size=3, device="cpu").options.batch_size == 3
    tiled = given.with_options(tile=16, max_side=32)
    assert tiled.backend is given.backend and (tiled.tile, tiled.max_side, given.tile) == (16, 32, "off")
    with pytest.raises(TranslateError, match="^precision: decided with the runtime"):
        given.with_options(precision="bf16")


def test_from_path_takes_options(run_dir):
    t = Translator.from_path(run_dir, options=TranslateOptions(tile="off", batch_size=2), device="cpu")
    assert (t.tile, t.batch_size, t.direction, t.runtime.backend) == ("off", 2, "a2b", "torch")
    assert Translator.from_path(run_dir, direction="b2a", device="cpu").direction == "b2a"


def test_tile_layout_covers_and_weights_sum_to_one():
    for length, tile, overlap in ((300, 96, 24), (516, 128, 32), (96, 96, 24), (132, 64, 16), (200, 96, 32)):
        starts = tile_starts(length, tile, overlap, 4)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        assert all(s % 4 == 0 for s in starts)
        assert all(b - a <= tile - overlap + 3 for a, b in itertools.pairwise(starts))  # overlap kept
        total = torch.zeros(length)
        for s, w in zip(starts, blend_weights(starts, min(tile, length))):
            total[s : s + len(w)] += w
        torch.testing.assert_close(total, torch.ones(length))


# ------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize("size", [(333, 517), (517, 333), (1, 1), (7, 3), (64, 48)])
def test_output_has_input_size(translator, size):
    out = translator(_photo(*size))
    assert isinstance(out, Image.Image) and out.size == size and out.mode == "RGB"


def test_max_side_and_size_resize_first(run_dir):
    t = Translator.from_checkpoint(run_dir, device="cpu", max_side=100)
    assert t(_photo(300, 150)).size == (100, 50)
    assert t(_photo(60, 30)).size == (60, 30)  # never upscaled
    forced = Translator.from_checkpoint(run_dir, device="cpu", size="64x40")
    assert forced(_photo(300, 150)).size == (64, 40)


# ----------------------------------------------------------------------------------------- tiling


def _tile_edges(translator: Translator, length: int, tile: int) -> tuple[list[int], list[int]]:
    """Tile starts along one axis, and the positions where a tile starts or ends inside the image."""
    starts = tile_starts(length, tile, translator._overlap(tile), translator.size_multiple)
    edges = {s for s in starts if s > 0} | {s + tile for s in starts if s + tile < length}
    return starts, sorted(edges)


def _exact_mask(starts: list[int], tile: int, length: int, radius: int) -> torch.Tensor:
    """Positions where every tile covering them is at least ``radius`` from that tile's inner edges."""
    ok = torch.ones(length, dtype=torch.bool)
    for s in starts:
        e = min(s + tile, length)
        lo = s + radius if s > 0 else s
        hi = e - radius if e < length else e
        covered = torch.zeros(length, dtype=torch.bool)
        covered[s:e] = True
        core = torch.zeros(length, dtype=torch.bool)
        core[lo:max(lo, hi)] = True
        ok &= ~covered | core
    return ok


def test_tiled_equals_untiled_away_from_tile_borders_without_norm():
    # Without normalisation an output pixel depends only on its receptive field (63 px for the tiny
    # ResNet, radius 32), so a tile computes it exactly unless it lies within 32 px of an inner tile
    # edge, where the tile sees its own reflection padding instead of the neighbouring pixels.
    net, cfg = _generator("none")
    x = _scene(200, 264)  # already multiples of 4: no image padding
    full = Translator(model=net, device="cpu", tile="off", config=cfg).translate_tensor(x).float()
    tiled_t = Translator(model=net, device="cpu", tile=128, tile_overlap=32, config=cfg)
    tiled = tiled_t.translate_tensor(x).float()
    assert tiled.shape == full.shape
    diff = (tiled - full).abs()[0].amax(0)  # [H, W]

    ys, rows = _tile_edges(tiled_t, 200, 128)
    xs, cols = _tile_edges(tiled_t, 264, 128)
    assert len(ys) == 2 and len(xs) == 3
    far = _exact_mask(ys, 128, 200, 32)[:, None] & _exact_mask(xs, 128, 264, 32)[None, :]
    assert far.sum() > 5000
    assert diff[far].max() <= 1  # identical up to 8-bit rounding of float summation order
    # Near the seams the blend of two slightly wrong tiles stays close to the untiled output.
    assert diff.mean() < 0.5 and diff.max() <= 12

    # No step at the seams: the tiled image's pixel-to-pixel change across every tile edge stays
    # within 3 levels of the untiled image's change at the same place.
    gx_t, gx_f = tiled[0, :, :, 1:] - tiled[0, :, :, :-1], full[0, :, :, 1:] - full[0, :, :, :-1]
    gy_t, gy_f = tiled[0, :, 1:, :] - tiled[0, :, :-1, :], full[0, :, 1:, :] - full[0, :, :-1, :]
    for c in cols:
        assert (gx_t[:, :, c - 1] - gx_f[:, :, c - 1]).abs().max() <= 3
    for r in rows:
        assert (gy_t[:, r - 1, :] - gy_f[:, r - 1, :]).abs().max() <= 3


def test_tiled_instance_norm_shares_whole_image_statistics():
    # Instance norm normalises by image statistics, so a tile alone would get its own colour cast.
    # The translator records the whole image's statistics and gives them to every tile; what remains
    # is the receptive-field effect of the test above, amplified by a random (untrained) net whose
    # instance norms blow small differences up. Hence a looser bound, and the comparison with the
    # naive per-tile statistics shows what the sharing buys.
    net, cfg = _generator("instance")
    x = _scene(192, 192, seed=1)
    full = Translator(model=net, device="cpu", tile="off", config=cfg).translate_tensor(x).float()
    shared_t = Translator(model=net, device="cpu", tile=128, tile_overlap=64, config=cfg)
    shared = shared_t.translate_tensor(x).float()
    shared_t._norms = []  # what ONNX/TorchScript models get: per-tile statistics
    naive = shared_t.translate_tensor(x).float()
    err_shared, err_naive = (shared - full).abs().mean(), (naive - full).abs().mean()
    assert err_shared < 1.0
    assert err_shared * 5 < err_naive


def test_instance_norm_seam_in_flat_region_has_no_step():
    # A flat grey region crossing a tile border next to a busy one: per-tile statistics would shift
    # the flat region's colour in one tile; shared statistics keep it continuous.
    net, cfg = _generator("instance")
    x = torch.full((1, 3, 128, 256), 120, dtype=torch.uint8)
    x[..., :, 160:] = _scene(128, 96, seed=2)
    t = Translator(model=net, device="cpu", tile=128, tile_overlap=32, config=cfg)  # tiles at x = 0, 64, 128
    y = t.translate_tensor(x).float()[0]
    full = Translator(model=net, device="cpu", tile="off", config=cfg).translate_tensor(x).float()[0]
    t._norms = []
    naive = t.translate_tensor(x).float()[0]
    region = (slice(None), slice(8, 120), slice(8, 150))  # the flat area, across two tile edges

    def step(img: torch.Tensor) -> torch.Tensor:
        # Change from pixel to pixel beyond what the untiled output has there (a random transposed
        # conv paints a fixed fine texture even on a flat input, so raw differences are not zero).
        g, g_full = img[:, :, 1:] - img[:, :, :-1], full[:, :, 1:] - full[:, :, :-1]
        return (g - g_full)[:, 8:120, 8:149].abs().max()

    assert (y - full)[region].abs().max() <= 4
    assert step(y) <= 3
    assert (naive - full)[region].abs().max() > 40  # what per-tile statistics would have done


def test_auto_tiling_under_small_memory_budget(monkeypatch):
    net, cfg = _generator("none")
    x = _scene(160, 200)
    full = Translator(model=net, device="cpu", tile="off", config=cfg).translate_tensor(x)
    small = Translator(model=net, device="cpu", tile="auto", memory_budget=96 * 96 * 4, bytes_per_pixel=4,
                       config=cfg)
    used = []
    original = small._forward_tiled
    monkeypatch.setattr(small, "_forward_tiled", lambda t, tile: used.append(tile) or original(t, tile))
    y = small.translate_tensor(x)
    assert used and used[0] == 96
    assert y.shape == full.shape
    assert (y.float() - full.float()).abs().mean() < 1.0


def test_memory_estimate_follows_the_translations_own_tiling(monkeypatch):
    net, cfg = _generator("instance")
    budget, bpp = 96 * 96 * 4, 4
    small = Translator(model=net, device="cpu", tile="auto", memory_budget=budget, bytes_per_pixel=bpp,
                       config=cfg)
    used = []
    original = small._forward_tiled
    monkeypatch.setattr(small, "_forward_tiled", lambda t, tile: used.append(tile) or original(t, tile))
    small.translate_tensor(_scene(150, 203))  # sides that need padding
    est = small.estimate_memory(203, 150)
    # Tiled: the generator's share is one pass of the budget (a tile, or the statistics pass) ...
    assert used and used[0] ** 2 * bpp <= est.generator <= budget
    assert est.peak == small.estimate_peak_bytes(203, 150) == est.copies + est.generator
    # ... while an untiled translator's pass covers the whole padded image, with the same copies.
    whole = Translator(model=net, device="cpu", tile="off", bytes_per_pixel=bpp, config=cfg)
    m = whole.size_multiple
    padded = -(-150 // m) * m * (-(-203 // m) * m)
    assert whole.estimate_memory(203, 150).generator == padded * bpp
    assert whole.estimate_memory(203, 150).copies == est.copies
    # The full-resolution copies grow with the image, which tiling does not change; the pass does not.
    bigger = small.estimate_memory(406, 300)
    assert bigger.copies >= 3.9 * est.copies and bigger.generator == est.generator
    # Estimated at the size actually translated: max_side applies first.
    capped = Translator(model=net, device="cpu", max_side=64, bytes_per_pixel=bpp, config=cfg)
    assert capped.estimate_memory(4000, 3000) == capped.estimate_memory(64, 48)


# ------------------------------------------------------------------------------- Python API inputs


def test_alpha_is_reattached(translator):
    rgba = np.zeros((30, 41, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[5:20, 5:30, 3] = 255
    rgba[20:, :, 3] = 90
    out = translator(Image.fromarray(rgba, "RGBA"))
    assert out.mode == "RGBA" and out.size == (41, 30)
    assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])
    out_np = translator(rgba)
    assert out_np.shape == (30, 41, 4) and np.array_equal(out_np[..., 3], rgba[..., 3])
    assert np.array_equal(out_np[..., :3], np.asarray(out)[..., :3])


def test_grayscale_in_rgb_out(translator):
    gray = np.tile(np.linspace(0, 255, 37, dtype=np.float32), (23, 1)).astype(np.uint8)
    out = translator(Image.fromarray(gray, "L"))
    assert out.mode == "RGB" and out.size == (37, 23)
    out_np = translator(gray)
    assert out_np.shape == (23, 37, 3) and out_np.dtype == np.uint8
    assert np.array_equal(out_np, np.asarray(out))


def test_numpy_and_batches(translator):
    a, b, c = (np.asarray(_photo(40, 24, seed=s)) for s in range(3))
    single = [translator(img) for img in (a, b, c)]
    batch = translator([a, b, c, np.asarray(_photo(17, 33))])
    assert isinstance(batch, list) and len(batch) == 4
    assert batch[3].shape == (33, 17, 3)
    for one, many in zip(single, batch):
        assert isinstance(many, np.ndarray) and many.shape == (24, 40, 3)
        # Batched convolutions may sum in another order: allow one level of rounding.
        assert np.abs(one.astype(int) - many.astype(int)).max() <= 1
    pil = translator([Image.fromarray(a), Image.fromarray(b)])
    assert all(isinstance(p, Image.Image) for p in pil)
    with pytest.raises(TypeError):
        translator(a.astype(np.float32))


def test_directions_use_different_generators(run_dir):
    img = _photo(32, 32)
    a2b = np.asarray(Translator.from_checkpoint(run_dir, direction="a2b", device="cpu")(img))
    b2a = np.asarray(Translator.from_checkpoint(run_dir, direction="b2a", device="cpu")(img))
    assert not np.array_equal(a2b, b2a)
    with pytest.raises(CheckpointError):
        Translator.from_checkpoint(run_dir / "nothing-here")


# -------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def photos(tmp_path) -> Path:
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    _photo(40, 30).save(src / "a.jpg", quality=95)
    _photo(40, 30, seed=1).save(src / "b.png")
    _photo(33, 21, seed=2).save(src / "sub" / "c.png")
    return src


def test_cli_folder_mirrors_names_and_never_overwrites(run_dir, photos, tmp_path):
    out = tmp_path / "out"
    r = _cli("translate", "--checkpoint", run_dir, photos, "--out", out, "--recursive", "--quiet")
    assert r.exit_code == 0, r.output
    assert "translated 3, skipped 0, failed 0" in r.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == ["a.jpg", "b.png", "sub/c.png"]
    assert _open(out / "sub" / "c.png").size == (33, 21)

    before = (out / "b.png").read_bytes()
    (out / "b.png").write_bytes(b"mine")  # a file the user changed must survive a rerun
    r = _cli("translate", "--checkpoint", run_dir, photos, "--out", out, "--recursive", "--quiet")
    assert r.exit_code == 0 and "translated 0, skipped 3, failed 0" in r.output
    assert (out / "b.png").read_bytes() == b"mine"
    r = _cli("translate", "--checkpoint", run_dir, photos, "--out", out, "--recursive", "--overwrite",
             "--quiet")
    assert r.exit_code == 0 and "translated 3, skipped 0" in r.output
    assert (out / "b.png").read_bytes() == before

    # An output folder inside the input folder is not read back as input on the next run.
    inner = photos / "styled"
    for _ in range(2):
        r = _cli("translate", "--checkpoint", run_dir, photos, "--out", inner, "--recursive", "--quiet")
        assert r.exit_code == 0, r.output
    assert not (inner / "styled").exists() and "skipped 3" in r.output

    # Without --recursive only the top level; --suffix and --format name the outputs.
    r = _cli("translate", "--checkpoint", run_dir, photos, "--out", tmp_path / "flat", "--suffix", "_x",
             "--format", "webp", "--quiet")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["a_x.webp", "b_x.webp"]


def test_cli_refuses_to_overwrite_inputs(run_dir, photos):
    r = _cli("translate", "--checkpoint", run_dir, photos / "b.png", photos / "a.jpg", "--out", photos,
             "--overwrite", "--quiet")
    assert r.exit_code == 1
    assert "would overwrite an input file" in r.output
    assert _open(photos / "b.png").size == (40, 30)  # still the original


def test_cli_bad_files_fail_but_good_ones_are_written(run_dir, tmp_path):
    src = tmp_path / "mixed"
    make_bad_files(src)
    odd = make_odd_images(tmp_path / "odd")
    for name in ("rgba", "gray", "exif_rotated", "png16"):
        (src / odd[name].name).write_bytes(odd[name].read_bytes())
    out = tmp_path / "out"
    r = _cli("translate", "--model", run_dir, src, tmp_path / "missing.png", "--out", out, "--quiet")
    assert r.exit_code == 1
    assert "translated 4, skipped 0, failed 5" in r.output
    assert "truncated.png" in r.output and "missing.png: no such file or folder" in r.output
    assert _open(out / "exif_rotated.jpg").size == (20, 40)  # EXIF orientation applied
    assert _open(out / "rgba.png").mode == "RGBA"  # alpha kept
    assert _open(out / "gray.png").mode == "RGB"  # grayscale in, RGB out
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temp files left


def test_cli_single_file_glob_and_stdin(run_dir, photos, tmp_path):
    r = _cli("translate", "--checkpoint", run_dir, photos / "a.jpg", "--out", tmp_path / "one.png", "--quiet")
    assert r.exit_code == 0, r.output
    assert _open(tmp_path / "one.png").size == (40, 30)

    r = _cli("translate", "--checkpoint", run_dir, f"{photos}/*.png", "--out", tmp_path / "g", "--quiet")
    assert r.exit_code == 0 and sorted(p.name for p in (tmp_path / "g").iterdir()) == ["b.png"]

    r = _cli("translate", "--checkpoint", run_dir, "-", "--quiet", input=(photos / "b.png").read_bytes())
    assert r.exit_code == 0, r.output
    assert _open(io.BytesIO(r.stdout_bytes)).size == (40, 30)
    r = _cli("translate", "--checkpoint", run_dir, photos / "a.jpg", "--out", "-", "--format", "jpg",
             "--quiet")
    assert r.exit_code == 0, r.output
    assert _open(io.BytesIO(r.stdout_bytes)).format == "JPEG"
    r = _cli("translate", "--checkpoint", run_dir, "-", "--quiet", input=b"not an image")
    assert r.exit_code == 1 and "<stdin>" in r.output


def test_glob_rerun_does_not_translate_its_own_outputs(run_dir, photos):
    def run(*args):
        r = _cli("translate", "--checkpoint", run_dir, *args, "--quiet")
        assert r.exit_code == 0, r.output
        return r.output

    # --out inside the globbed folder: a recursive glob would find last run's outputs there.
    for _ in range(2):
        out = run(f"{photos}/**/*.png", "--recursive", "--out", photos / "styled")
    assert "translated 0, skipped 2, failed 0" in out
    styled = photos / "styled"
    assert sorted(p.relative_to(styled).as_posix() for p in styled.rglob("*.png")) == ["b.png", "sub/c.png"]

    # --out is the globbed folder itself, told apart by a suffix: b_x.png must not become b_x_x.png.
    for _ in range(2):
        out = run(f"{photos}/*.png", "--out", photos, "--suffix", "_x")
    assert "translated 0, skipped 1, failed 0" in out
    assert sorted(p.name for p in photos.glob("*.png")) == ["b.png", "b_x.png"]
    out = run(f"{photos}/*.png", "--out", photos, "--suffix", "_x", "--overwrite")  # replaced, not re-read
    assert "translated 1, skipped 0, failed 0" in out and not (photos / "b_x_x.png").exists()


def test_cli_reports_bad_flags_in_one_line(run_dir, photos, tmp_path):
    r = _cli("translate", "--checkpoint", run_dir, photos, "--out", tmp_path / "o", "--tile", "huge")
    assert r.exit_code == 1 and r.output.strip().startswith("error: --tile")
    r = _cli("translate", "--checkpoint", run_dir, photos, "--out", tmp_path / "o", "--batch-size", "0")
    assert (r.exit_code, r.output) == (1, "error: --batch-size must be >= 1, got 0\n")
    r = _cli("translate", "--checkpoint", run_dir, photos, "--out", tmp_path / "o", "--memory-budget", "10K")
    assert (r.exit_code, r.output) == (1, "error: --memory-budget '10K': must be at least 64M\n")
    r = _cli("translate", "--checkpoint", tmp_path / "nope", photos, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "nope" in r.output


def _translate_process(run_dir, *args, stdin=None, stdout=None):
    """``python -m cyclegan translate`` in a real process: its own stdout, signals and exit status."""
    return subprocess.run(
        [sys.executable, "-m", "cyclegan", "translate", "--checkpoint", str(run_dir), "--quiet",
         "--precision", "fp32", "--device", "cpu", *map(str, args)],
        stdin=stdin, stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=120, check=False,
    )


def test_stdout_on_a_full_device_is_one_line_error(run_dir, photos):
    # /dev/full accepts the open and fails every write with ENOSPC, like a full disk behind `> file`.
    with open(photos / "b.png", "rb") as src, open("/dev/full", "wb") as full:
        proc = _translate_process(run_dir, "-", "--out", "-", stdin=src, stdout=full)
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0].lower(), err
    assert len(err.strip().splitlines()) == 1, err


def test_stdout_closed_early_exits_quietly(run_dir, photos):
    # `cyclegan translate - | head -c 0`: the reader is gone; like other tools, stop without a traceback.
    with open(photos / "b.png", "rb") as src:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cyclegan", "translate", "--checkpoint", str(run_dir), "--quiet",
             "--precision", "fp32", "--device", "cpu", "-"],
            stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        proc.stdout.close()  # nobody will read the image
        _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in err.decode() and "Exception ignored" not in err.decode(), err.decode()


# ------------------------------------------------------------------------------------------ video


def _make_video(path: Path, *, frames: int = 8, size=(64, 48), fps: int = 12, audio: bool = True) -> None:
    av = pytest.importorskip("av")
    w, h = size
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = c.add_stream("aac", rate=16000) if audio else None  # every stream before the first packet
        if a is not None:
            a.layout = "mono"
        for i in range(frames):
            arr = np.asarray(_photo(w, h, seed=i % 2)).copy()
            arr[: 4 * i + 4, :, 0] = 250  # changes every frame
            for p in v.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            t = np.arange(int(16000 * frames / fps)) / 16000
            frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            for p in list(a.encode(frame)) + list(a.encode(None)):
                c.mux(p)


def _probe(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"fps": v.average_rate, "size": (v.width, v.height),
                "audio": [s.codec_context.name for s in c.streams.audio]}
        info["frames"] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return info


def test_video_same_frames_fps_size_and_audio(run_dir, tmp_path):
    src = tmp_path / "clip.mp4"
    _make_video(src)
    r = _cli("translate", "--checkpoint", run_dir, src, "--out", tmp_path / "styled.mp4", "--quiet")
    assert r.exit_code == 0, r.output
    got, ref = _probe(tmp_path / "styled.mp4"), _probe(src)
    assert len(got["frames"]) == len(ref["frames"]) == 8
    assert got["fps"] == ref["fps"] == Fraction(12)
    assert got["size"] == (64, 48)
    assert got["audio"] == ["aac"]

    r = _cli("translate", "--checkpoint", run_dir, src, "--out", tmp_path / "smooth.mp4",
             "--temporal-smoothing", "0.6", "--quiet")
    assert r.exit_code == 0, r.output
    smooth = _probe(tmp_path / "smooth.mp4")["frames"]
    assert len(smooth) == 8
    # Smoothing damps the change from frame to frame.
    def motion(frames):
        steps = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in itertools.pairwise(frames)]
        return float(np.mean(steps))

    assert motion(smooth) < motion(got["frames"])


def _make_static_noisy_video(path: Path, *, frames: int = 8, size=(64, 48)) -> None:
    """One scene, a little sensor noise per frame: no cuts, so flow mode has something to keep."""
    av = pytest.importorskip("av")
    w, h = size
    rng = np.random.default_rng(1)
    base = np.asarray(_photo(w, h, seed=3)).astype(int)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=12)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        for _ in range(frames):
            arr = np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)


def test_video_temporal_modes_through_the_cli(run_dir, tmp_path):
    pytest.importorskip("cv2")
    src = tmp_path / "clip.mp4"
    _make_static_noisy_video(src)
    outs = {}
    for name, flags in {"off": [], "old": ["--temporal-smoothing", "0.6"],
                        "blend": ["--temporal", "blend", "--temporal-strength", "0.6"],
                        "flow": ["--temporal", "flow"]}.items():
        r = _cli("translate", "--checkpoint", run_dir, src, "--out", tmp_path / f"{name}.mp4", "--quiet",
                 *flags)
        assert r.exit_code == 0, r.output
        outs[name] = _probe(tmp_path / f"{name}.mp4")["frames"]
        assert len(outs[name]) == 8
    # The former flag is --temporal blend with that strength, frame for frame.
    assert all(np.array_equal(a, b) for a, b in zip(outs["old"], outs["blend"]))
    assert not all(np.array_equal(a, b) for a, b in zip(outs["off"], outs["flow"]))
    r = _cli("translate", "--checkpoint", run_dir, src, "--out", tmp_path / "bad.mp4", "--temporal", "flow",
             "--temporal-strength", "1.5")
    assert r.exit_code == 2 and "--temporal-strength" in r.output and not (tmp_path / "bad.mp4").exists()


def test_translate_frames_streams_in_batches_and_stabilises(translator):
    pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    base = np.asarray(_photo(48, 32)).copy()
    pulled = []

    def frames():  # a static scene with per-frame noise: what a flickering output looks like
        for i in range(7):
            pulled.append(i)
            yield np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)

    stream = translator.translate_frames(frames(), temporal="off")
    first = next(stream)
    assert first.shape == base.shape and len(pulled) <= translator.batch_size  # nothing read ahead
    plain = [first, *stream]
    rng = np.random.default_rng(0)
    pulled.clear()
    smooth = list(translator.translate_frames(frames(), temporal="flow", temporal_strength=0.8))
    assert len(plain) == len(smooth) == 7

    def flicker(seq):
        steps = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in itertools.pairwise(seq)]
        return float(np.mean(steps))

    assert flicker(smooth) < flicker(plain)


def test_analyze_video_cli_reports_warping_error(run_dir, tmp_path):
    pytest.importorskip("cv2")
    src = tmp_path / "clip.mp4"
    _make_video(src, audio=False)
    r = _cli("translate", "--checkpoint", run_dir, src, "--out", tmp_path / "o.mp4", "--quiet")
    assert r.exit_code == 0
    r = _cli("analyze", "video", src, tmp_path / "o.mp4", "--json", tmp_path / "w.json", "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "w.json").read_text())
    assert report["warping_error"] >= 0 and report["input_warping_error"] >= 0
    assert "input (floor)" in r.output


def test_video_summary_counts_frames_not_images(run_dir, tmp_path):
    src = tmp_path / "clip.mp4"
    _make_video(src, frames=6, audio=False)
    r = _cli("translate", "--checkpoint", run_dir, src, "--out", tmp_path / "styled.mp4", "--quiet")
    assert r.exit_code == 0, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("translated 1 video (6 frames, "), line
    assert "frames/s)" in line and "img/s" not in line, line

    _photo(24, 16).save(tmp_path / "p.png")  # images and videos together: each counted in its own unit
    r = _cli("translate", "--checkpoint", run_dir, src, tmp_path / "p.png", "--out", tmp_path / "mixed",
             "--quiet")
    assert r.exit_code == 0, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("translated 1 image ("), line
    assert " img/s) and 1 video (6 frames, " in line and ", skipped 0, failed 0 in " in line, line


def test_video_folder_output_and_gif(run_dir, tmp_path):
    av = pytest.importorskip("av")
    src = tmp_path / "clips"
    src.mkdir()
    _make_video(src / "a.mp4", frames=3, audio=False)
    with av.open(str(src / "b.gif"), "w") as c:
        v = c.add_stream("gif", rate=10)
        v.width, v.height, v.pix_fmt = 30, 20, "rgb8"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((20, 30, 3), 60 * i, np.uint8), format="rgb24")
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    (src / "broken.mp4").write_bytes(b"\x00" * 100)
    r = _cli("translate", "--checkpoint", run_dir, src, "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 1, r.output
    assert "translated 2 videos (7 frames, " in r.output and "skipped 0, failed 1" in r.output
    assert "broken.mp4" in r.output
    assert len(_probe(tmp_path / "o" / "b.gif")["frames"]) == 4
    assert _probe(tmp_path / "o" / "a.mp4")["size"] == (64, 48)


def test_out_folder_equal_to_input_folder_is_refused_clearly(translator, tmp_path):
    from cyclegan.translate import translate_paths

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "a.png")
    messages = []
    summary = translate_paths(translator, [str(folder)], out=folder, echo=messages.append)
    assert not summary.ok and any("--out is this input folder" in m for m in messages)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]


def test_auto_precision_picks_bf16_only_within_tolerance(monkeypatch):
    from cyclegan import runtime as rt
    from cyclegan.config import GeneratorConfig
    from cyclegan.networks import build_generator
    from cyclegan.translate import Translator

    net = build_generator(GeneratorConfig(ngf=4, n_blocks=1))
    # PyTorch only here; ONNX Runtime is tested below
    monkeypatch.setattr(rt, "onnx_available", lambda: False)
    monkeypatch.setattr(rt, "native_bf16", lambda device: False)
    assert Translator(model=net, device="cpu", precision="auto").precision == "fp32"
    monkeypatch.setattr(rt, "native_bf16", lambda device: True)
    chosen = Translator(model=net, device="cpu", precision="auto")
    # the decision follows the probe: bf16 exactly when its drift from fp32 is inside the tolerance
    accepted = "at most" in chosen.runtime.reason
    assert chosen.precision == ("bf16" if accepted else "fp32")
    monkeypatch.setattr(rt, "AUTO_MAX_LEVELS", -1)  # nothing can pass: fp32
    assert Translator(model=net, device="cpu", precision="auto").precision == "fp32"
    monkeypatch.setattr(rt, "AUTO_MAX_LEVELS", 255)
    monkeypatch.setattr(rt, "AUTO_MEAN_LEVELS", 255.0)  # everything passes: bf16
    assert Translator(model=net, device="cpu", precision="auto").precision == "bf16"
