"""Dataset preparation: .npz packing/loading and GrabCut background removal."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cyclegan.cli import main
from cyclegan.config import DataConfig
from cyclegan.data import UnpairedImages, gather_training_files, split_validation
from cyclegan.errors import DataError, PrepError
from cyclegan.evaluate import load_test_images
from cyclegan.npz import ArrayImages, open_image_array, write_image_array
from cyclegan.prep import composite_on_white, fit_square, grabcut_mask, pack_folder, remove_background
from cyclegan.prep.edges import EdgeSmoothSettings, edge_mask, edge_smooth, edge_smooth_folder


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _images(folder: Path, n: int = 5) -> list[Path]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = 20 + 3 * i, 30 - 2 * i  # different sizes and aspect ratios
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------
# pack / load


@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "stored"])
def test_pack_and_load_round_trip(tmp_path, compress):
    paths = _images(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    result = pack_folder(tmp_path / "in", tmp_path / "a.npz", size=16, compress=compress)
    assert result.count == 5 and [p.name for p, _ in result.skipped] == ["broken.png"]
    assert not list(tmp_path.glob(".a.npz.tmp-*"))  # written atomically, nothing left behind
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        info = zf.getinfo("images.npy")
        assert (info.compress_type == zipfile.ZIP_DEFLATED) == compress

    arr = open_image_array(tmp_path / "a.npz")
    assert arr.shape == (5, 16, 16, 3) and arr.dtype == np.uint8
    assert isinstance(arr, np.memmap) != compress  # stored members are memory-mapped
    for i, path in enumerate(sorted(paths)):
        expected = np.asarray(fit_square(Image.open(path).convert("RGB"), 16))
        assert np.array_equal(arr[i], expected)

    images = ArrayImages(tmp_path / "a.npz", limit=3)
    assert len(images) == 3 and images.memory_mapped != compress
    assert images[2].size == (16, 16) and np.array_equal(np.asarray(images[2]), arr[2])
    with pytest.raises(IndexError):
        images[3]
    # DataLoader workers started with "spawn" get the path, not a pickled copy of the array
    clone = pickle.loads(pickle.dumps(images))
    assert clone._array is None and np.array_equal(np.asarray(clone[1]), arr[1])


def test_training_data_from_npz(tmp_path):
    _images(tmp_path / "in", n=4)
    pack_folder(tmp_path / "in", tmp_path / "a.npz", size=16)
    pack_folder(tmp_path / "in", tmp_path / "b.npz", size=16, compress=False)
    cfg = DataConfig(data_a=str(tmp_path / "a.npz"), data_b=str(tmp_path / "b.npz"), load_size=16,
                     crop_size=16, preprocess="none", flip=False, max_dataset_size=3)
    files = gather_training_files(cfg, batch_size=2)
    assert isinstance(files.a, ArrayImages) and len(files.a) == 3 and len(files.b) == 3
    dataset = UnpairedImages(files.a, files.b, cfg)
    item = dataset[(0, 2, 123)]
    assert item["A"].shape == (3, 16, 16) and item["A"].dtype == torch.uint8
    assert torch.equal(item["B"], torch.from_numpy(np.array(files.b[2])).permute(2, 0, 1))
    assert dataset.fixed_batch(2)["A"].shape == (2, 3, 16, 16)
    with pytest.raises(DataError, match="fewer than the batch size 4"):
        gather_training_files(cfg, batch_size=4)


def test_validation_split_of_an_npz_domain_stays_an_array(tmp_path):
    _images(tmp_path / "in", n=5)
    pack_folder(tmp_path / "in", tmp_path / "a.npz", size=8, compress=False)
    images = ArrayImages(tmp_path / "a.npz")
    train_part, val_part = split_validation(images, 0.4, seed=0)
    assert isinstance(train_part, ArrayImages) and train_part.memory_mapped
    assert (len(train_part), len(val_part)) == (3, 2)
    rows = {np.asarray(img).tobytes() for part in (train_part, val_part) for img in part}
    assert rows == {np.asarray(images[i]).tobytes() for i in range(5)}
    held, skipped = load_test_images(val_part, size=8)  # what --eval-every reads
    assert held.shape == (2, 3, 8, 8) and not skipped


def test_npz_key_selects_one_domain_of_a_two_array_file(tmp_path):
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = np.full((3, 8, 8, 3), 200, np.uint8)
    np.savez_compressed(tmp_path / "both.npz", a, b)  # arr_0, arr_1, as np.savez names unnamed arrays
    with pytest.raises(DataError, match="several arrays .*arr_0, arr_1.*npz_key_a"):
        open_image_array(tmp_path / "both.npz")
    cfg = DataConfig(data_a=str(tmp_path / "both.npz"), data_b=str(tmp_path / "both.npz"),
                     npz_key_a="arr_0", npz_key_b="arr_1")
    files = gather_training_files(cfg, batch_size=1)
    assert (len(files.a), len(files.b)) == (2, 3)
    with pytest.raises(DataError, match="no array named 'images'"):
        open_image_array(tmp_path / "both.npz", key="images")


@pytest.mark.parametrize(
    "array, needle",
    [
        (np.zeros((2, 8, 8, 3), np.float32), "dtype float32"),
        (np.zeros((2, 8, 8), np.uint8), r"shape \(2, 8, 8\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"shape \(2, 8, 8, 4\)"),
        (np.zeros((0, 8, 8, 3), np.uint8), "no images"),
    ],
    ids=["float", "grey", "rgba", "empty"],
)
@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "stored"])
def test_wrong_arrays_are_one_line_data_errors(tmp_path, array, needle, compress):
    path = tmp_path / "bad.npz"
    (np.savez_compressed if compress else np.savez)(path, images=array)
    with pytest.raises(DataError, match=needle) as info:
        open_image_array(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(DataError):
        write_image_array(tmp_path / "out.npz", array)
    assert not (tmp_path / "out.npz").exists()


def test_unreadable_npz_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        open_image_array(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"definitely not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        open_image_array(tmp_path / "junk.npz")


def test_pack_cli_and_its_errors(tmp_path):
    _images(tmp_path / "in", n=3)
    result = cli("prep", "pack", tmp_path / "in", "--size", 12, "--out", tmp_path / "x.npz",
                 "--fit", "stretch")
    assert result.exit_code == 0, result.output
    assert "wrote 3 images of 12x12" in result.output
    assert open_image_array(tmp_path / "x.npz").shape == (3, 12, 12, 3)
    result = cli("prep", "pack", tmp_path / "nowhere", "--out", tmp_path / "y.npz")
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert "folder not found" in result.output
    result = cli("prep", "pack", tmp_path / "in", "--out", tmp_path / "y.zip")
    assert result.exit_code == 1 and "must end in .npz" in result.output


# ----------------------------------------------------------------------------------------------
# Background removal


def _scene(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A red ellipse (the "animal") on a noisy green-blue gradient; returns (image, true mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    background = np.stack([40 + 100 * xx / w, 120 + 60 * yy / h, np.full((h, w), 60.0)], -1)
    background += rng.normal(0, 12, (h, w, 3))
    obj = ((xx - w / 2) / (0.28 * w)) ** 2 + ((yy - h / 2) / (0.25 * h)) ** 2 <= 1
    subject = np.array([200.0, 60.0, 40.0]) + rng.normal(0, 12, (h, w, 3))
    img = np.where(obj[..., None], subject, background)
    return np.clip(img, 0, 255).astype(np.uint8), obj


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("shape", [(96, 96), (300, 360)], ids=["sprite-size", "downscaled"])
def test_grabcut_finds_a_known_object(shape):
    img, truth = _scene(*shape)
    mask = grabcut_mask(img, max_side=160)
    assert mask.shape == truth.shape and mask.dtype == bool
    assert _iou(mask, truth) > 0.8
    assert np.array_equal(mask, grabcut_mask(img, max_side=160))  # seeded: same mask every time


def test_composite_on_white():
    img = np.full((4, 4, 3), 50, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    out = composite_on_white(img, mask, feather=0)
    assert (out[mask] == 50).all() and (out[~mask] == 255).all()


def test_remove_background_folder_with_masks_and_preview(tmp_path):
    src = tmp_path / "animals"
    (src / "cats").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_scene(64, 64, seed=i)[0]).save(src / "cats" / f"c{i}.jpg", quality=95)
    # a hand-made mask for c1 wins over GrabCut: a square subject
    user = np.zeros((64, 64), np.uint8)
    user[8:24, 8:24] = 255
    (tmp_path / "masks" / "cats").mkdir(parents=True)
    Image.fromarray(user).save(tmp_path / "masks" / "cats" / "c1.png")
    result = remove_background(src, tmp_path / "white", masks_dir=tmp_path / "masks", feather=0,
                               preview=tmp_path / "preview.png", preview_count=2)
    assert (result.written, result.from_masks) == (3, 1)
    outs = sorted(p.relative_to(tmp_path / "white").as_posix() for p in (tmp_path / "white").rglob("*.png"))
    assert outs == ["cats/c0.png", "cats/c1.png", "cats/c2.png"]
    c1 = np.asarray(Image.open(tmp_path / "white" / "cats" / "c1.png"))
    outside = np.ones((64, 64), bool)
    outside[8:24, 8:24] = False
    assert (c1[outside] == 255).all() and (c1[~outside] < 255).any()
    c0 = np.asarray(Image.open(tmp_path / "white" / "cats" / "c0.png"))
    assert (c0[:4, :4] == 255).all() and (c0[32, 32] != 255).any()  # corner cleared, subject kept
    # preview: 3 rows (original, mask, result) x 2 columns of 128px tiles with 2px padding
    assert Image.open(result.preview).size == (2 * 130 + 2, 3 * 130 + 2)


def test_remove_background_cli(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_scene(48, 48)[0]).save(src / "a.png")
    result = cli("prep", "remove-background", src, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "a.png").is_file()
    assert (tmp_path / "out_preview.png").is_file()  # beside the output folder, not inside it
    result = cli("prep", "remove-background", src, src / "inside")
    assert result.exit_code == 1 and "must not be" in result.output
    with pytest.raises(PrepError):
        grabcut_mask(_scene(16, 16)[0], margin=0.7)


# ----------------------------------------------------------------------------------------------
# edge-smooth (CartoonGAN's edge-promoting data)


def _drawn_shape() -> np.ndarray:
    """A dark square on a light, flat background: edges only along the square's outline."""
    img = np.full((48, 48, 3), 220, dtype=np.uint8)
    img[14:34, 14:34] = (30, 60, 90)
    return img


def test_edge_smoothing_blurs_near_edges_and_leaves_flat_areas_unchanged():
    rgb = _drawn_shape()
    settings = EdgeSmoothSettings()
    mask = edge_mask(rgb, settings)
    out = edge_smooth(rgb, settings)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    changed = (out != rgb).any(axis=2)
    assert changed.any() and not changed[~mask].any()  # only pixels inside the dilated edge mask change
    # Flat areas far from the outline (background corners, the square's centre) are bit-for-bit kept.
    assert np.array_equal(out[:8, :8], rgb[:8, :8]) and np.array_equal(out[22:26, 22:26], rgb[22:26, 22:26])
    # Across the outline the step is softened: the pixels beside it move toward the other side's colour.
    assert 30 < out[24, 13, 0] < 220 and 30 < out[24, 14, 0] < 220
    assert mask[24, 14] and mask[24, 12] and not mask[24, 5]  # dilated a couple of pixels around the edge


def test_edge_smooth_folder_mirrors_the_style_folder_and_reuses_its_copies(tmp_path):
    style = tmp_path / "style"
    (style / "sub").mkdir(parents=True)
    Image.fromarray(_drawn_shape()).save(style / "a.jpg", quality=95)
    Image.fromarray(_drawn_shape()[:, ::-1]).save(style / "sub" / "b.png")
    (style / "broken.png").write_bytes(b"nope")
    out = tmp_path / "smooth"
    result = edge_smooth_folder(style, out)
    assert (result.written, result.existing) == (2,
                                                 0) and [p.name for p, _ in result.skipped] == ["broken.png"]
    assert (out / "a.png").is_file() and (out / "sub" / "b.png").is_file()
    assert Image.open(out / "a.png").size == (48, 48)
    again = edge_smooth_folder(style, out)
    assert (again.written, again.existing) == (0, 2)
    with pytest.raises(PrepError, match="other settings"):
        edge_smooth_folder(style, out, settings=EdgeSmoothSettings(size=32))
    with pytest.raises(PrepError, match="inside it"):
        edge_smooth_folder(style, style / "smooth")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    with pytest.raises(PrepError, match="not an edge-smoothing folder"):
        edge_smooth_folder(style, tmp_path / "busy")
    scaled = edge_smooth_folder(style, tmp_path / "scaled", settings=EdgeSmoothSettings(size=24))
    assert scaled.written == 2 and Image.open(tmp_path / "scaled" / "a.png").size == (24, 24)


def test_cli_edge_smooth(tmp_path):
    style = tmp_path / "style"
    style.mkdir()
    Image.fromarray(_drawn_shape()).save(style / "a.png")
    r = cli("prep", "edge-smooth", style, "--out", tmp_path / "smooth")
    assert r.exit_code == 0, r.output
    assert "wrote 1 edge-smoothed images" in r.output
    r = cli("prep", "edge-smooth", style, "--out", style / "inner")
    assert r.exit_code != 0 and r.output.startswith("error: ") and "inside it" in r.output


@pytest.mark.parametrize("manifest",
                         ["[1, 2]", '{"settings": [1], "rescale": "x"}', '{"settings": {}}', "{nope"])
def test_edge_smooth_refuses_a_manifest_of_the_wrong_shape_in_one_line(tmp_path, manifest):
    style = tmp_path / "style"
    style.mkdir()
    Image.fromarray(_drawn_shape()).save(style / "a.png")
    (tmp_path / "smooth").mkdir()
    (tmp_path / "smooth" / "edge_smooth.json").write_text(manifest)
    r = cli("prep", "edge-smooth", style, "--out", tmp_path / "smooth")
    assert r.exit_code == 1 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert "edge_smooth.json" in r.output
    assert (tmp_path / "smooth" / "edge_smooth.json").read_text() == manifest  # left as it was


def test_edge_smooth_warns_when_two_images_differ_only_in_extension(tmp_path):
    style = tmp_path / "style"
    style.mkdir()
    Image.fromarray(_drawn_shape()).save(style / "a.png")
    Image.fromarray(_drawn_shape()[::-1]).save(style / "a.jpg", quality=95)
    r = cli("prep", "edge-smooth", style, "--out", tmp_path / "smooth")
    assert r.exit_code == 0, r.output
    assert "warning: skipped" in r.output and "a.png" in r.output and "rename one of them" in r.output
    assert "wrote 1 edge-smoothed images" in r.output
    # The kept copy is a.jpg's (sorted first), written once and not overwritten by a.png's.
    expected = edge_smooth(np.asarray(Image.open(style / "a.jpg").convert("RGB")))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "smooth" / "a.png")), expected)
