"""bench/gt_style.py: the cartoon filter that is the ground-truth style, the per-photo scores against
the true target, the data build (disjoint unpaired halves, --style-images) and the race on tiny
settings. Filter and score values are checked by hand on images of a few pixels."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import gt_style  # bench/ is not a package; its scripts are imported by name


def flat(value, size=16) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def step(left=90, right=200, size=16) -> np.ndarray:
    img = flat(left, size)
    img[:, size // 2:] = right
    return img


# ------------------------------------------------------------------------------------------ filter


def test_flat_image_stays_flat_on_the_nearest_palette_level():
    # 100 / (255 / 4) = 1.57 -> level 2 -> 127.5, rounded to 128; no edges, so no outline
    out = gt_style.cartoon(flat(100))
    assert (out == 128).all()


def test_palette_levels_are_evenly_spaced_from_black_to_white():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert sorted(np.unique(gt_style.quantize(values)).tolist()) == [0, 64, 128, 191, 255]


def test_step_edge_gets_one_dark_outline_between_two_flat_tones():
    out = gt_style.cartoon(step(90, 200))  # 90 -> level 1 (64), 200 -> level 3 (191)
    assert (out[:, :7] == 64).all() and (out[:, 8:] == 191).all()
    assert (out[:, 7] == 0).all()  # the outline: black, one pixel wide, every row


def test_quantisation_yields_at_most_levels_cubed_colours():
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = gt_style.cartoon(noise)
    colours = np.unique(out.reshape(-1, 3), axis=0)
    assert len(colours) <= gt_style.LEVELS ** 3
    assert set(np.unique(out).tolist()) <= {0, 64, 128, 191, 255}


def test_filter_is_deterministic_and_leaves_its_input_alone():
    img = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    before = img.copy()
    assert np.array_equal(gt_style.cartoon(img), gt_style.cartoon(img))
    assert np.array_equal(img, before)


def test_filter_refuses_what_is_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        gt_style.cartoon(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        gt_style.cartoon(np.zeros((8, 8), np.uint8))


# ------------------------------------------------------------------------------------------ scores


def line_image(col: int, size=16) -> np.ndarray:
    img = flat(200, size)
    img[2:14, col] = 0  # a 12-px vertical dark line
    return img


def test_identical_images_score_perfectly():
    img = gt_style.cartoon(step())
    s = gt_style.score_pair(img, img)
    assert s["psnr"] == math.inf and s["ssim"] == pytest.approx(1.0)
    assert s["outline_f1"] == 1.0 and s["luma_r"] == pytest.approx(1.0)
    assert gt_style.summarise([s, s])["psnr"] == 100.0  # capped, so a mean stays a number


def test_constant_offset_psnr_is_hand_computed():
    # every channel off by 10: MSE 100, PSNR = 10 log10(255^2 / 100) = 28.1308 dB
    assert gt_style.score_pair(flat(110), flat(100))["psnr"] == pytest.approx(28.1308, abs=1e-4)


def test_inverted_brightness_has_negative_luma_correlation():
    img = step(40, 220)
    assert gt_style.luma_correlation(255 - img, img) == pytest.approx(-1.0, abs=1e-3)
    assert math.isnan(gt_style.luma_correlation(flat(3), img))  # a flat image has no tones


def test_outlines_are_thin_dark_lines():
    assert gt_style.outlines(line_image(5))[2:14, 5].all()
    assert gt_style.outlines(line_image(5)).sum() == 12
    assert not gt_style.outlines(step()).any()  # a step between two tones is no line


def test_outline_f1_tolerates_one_pixel_and_no_more():
    target = line_image(5)
    assert gt_style.outline_f1(line_image(6), target) == 1.0  # shifted 1 px: within tolerance
    assert gt_style.outline_f1(line_image(8), target) == 0.0  # shifted 3 px: no match
    both = line_image(5)
    both[2:14, 12] = 0  # the right line plus a false one of the same length
    assert gt_style.outline_f1(both, target) == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert gt_style.outline_f1(flat(200), flat(50)) == 1.0  # neither has outlines
    assert gt_style.outline_f1(flat(200), target) == 0.0  # only the target has


def test_summary_mean_luma_correlation_sees_an_inversion_across_images():
    targets = [flat(v) for v in (40, 120, 200)]
    scores = [gt_style.score_pair(255 - t, t) for t in targets]
    assert gt_style.summarise(scores)["mean_luma_r"] == pytest.approx(-1.0, abs=1e-6)


# ------------------------------------------------------------------------------------------ data


def photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(folder / f"{i:02d}.png")
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(out[-1])
    return out


def test_split_is_disjoint_seeded_and_keeps_style_images(tmp_path):
    files = [tmp_path / f"{i}.jpg" for i in range(11)]
    a, b = gt_style.split_photos(files, seed=3, style_images=None)
    assert len(a) == 5 and len(b) == 6 and not set(a) & set(b) and set(a) | set(b) == set(files)
    assert (a, b) == gt_style.split_photos(files, seed=3, style_images=None)
    assert gt_style.split_photos(files, seed=4, style_images=None) != (a, b)
    a2, b2 = gt_style.split_photos(files, seed=3, style_images=2)
    assert a2 == a and b2 == b[:2]
    with pytest.raises(SystemExit, match="--style-images 7"):
        gt_style.split_photos(files, seed=3, style_images=7)


def test_build_writes_unpaired_domains_and_true_targets(tmp_path):
    train, test = photos(tmp_path / "train", 8), photos(tmp_path / "test", 3, seed=1)
    data = tmp_path / "data"
    man = gt_style.build_dataset(data, photos=train, test_photos=test, size=16, train_size=20, seed=0,
                                 style_images=3, test_images=2)
    assert len(man["trainA"]) == 4 and len(man["trainB"]) == 3 and not set(man["trainA"]) & set(man["trainB"])
    counts = {d: len(list((data / d).iterdir())) for d in ("trainA", "trainB", "testA", "testB")}
    assert counts == {"trainA": 4, "trainB": 3, "testA": 2, "testB": 2}
    b0 = np.asarray(Image.open(data / "trainB" / "00000.png"))
    assert b0.shape == (20, 20, 3)
    assert np.array_equal(b0, gt_style.cartoon(gt_style.square(Path(man["trainB"][0]), 20)))
    ta, tb = gt_style.load_test(data)
    assert ta[0].shape == (16, 16, 3) and np.array_equal(tb[1], gt_style.cartoon(ta[1]))
    # the same request reuses the build; a different one rebuilds without leftovers
    stamp = (data / "trainB" / "00000.png").stat().st_mtime_ns
    gt_style.build_dataset(data, photos=train, test_photos=test, size=16, train_size=20, seed=0,
                           style_images=3, test_images=2)
    assert (data / "trainB" / "00000.png").stat().st_mtime_ns == stamp
    gt_style.build_dataset(data, photos=train, test_photos=test, size=16, train_size=20, seed=0,
                           style_images=1, test_images=2)
    assert len(list((data / "trainB").iterdir())) == 1


def test_build_refuses_test_photos_among_the_training_photos(tmp_path):
    train = photos(tmp_path / "train", 4)
    with pytest.raises(SystemExit, match="overlap"):
        gt_style.build_dataset(tmp_path / "d", photos=train, test_photos=train[:1], size=16, train_size=20,
                               seed=0, style_images=None, test_images=1)


# ------------------------------------------------------------------------------------------ the race


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the CPU clock reads /proc (Linux)")
def test_tiny_race_scores_every_arm_against_the_targets(tmp_path):
    out = tmp_path / "gt.json"
    # --no-classifier: training the domain classifier was most of this test's time, and
    # tests/test_quality_race.py's tiny race covers the classifier score in a race already
    proc = subprocess.run([sys.executable, str(BENCH / "gt_style.py"), "--tiny", "--jobs", "2", "--slices",
                           "1", "--no-classifier", "--runs", str(tmp_path / "runs"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "gt_style" and doc["data"]["n_test"] == 4
    assert doc["floor"]["n"] == 4 and 0 < doc["floor"]["psnr"] < 100 and 0 < doc["floor"]["ssim"] < 1
    rows = {r["arm"]: r for r in doc["results"]}
    assert list(rows) == ["paper", "fast"]  # the reference first
    assert rows["paper"]["ratio_psnr"] == pytest.approx(1.0)
    for name, row in rows.items():
        assert row["status"] == "ok", row["reason"]
        assert row["iterations"] > 0 and 0 < row["ssim"] <= 1 and -1 <= row["luma_r"] <= 1
        assert 0 <= row["outline_f1"] <= 1 and row.get("target_share_a2b") is None
        assert (tmp_path / "gt_grids" / f"{name}_seed0.png").is_file()
        assert (tmp_path / "runs" / f"{name}.s0" / "run" / "checkpoints" / "latest").is_dir()
    assert "no translation (floor)" in proc.stdout and "paper (reference)" in proc.stdout


def test_floor_only_trains_nothing(tmp_path):
    out = tmp_path / "floor.json"
    # In this process: the race test above runs the script end to end already.
    assert gt_style.main(["--tiny", "--floor-only", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["results"] == [] and doc["runs"] == [] and doc["floor"]["n"] == 4
    assert not any(p.name.endswith(".s0") for p in (tmp_path / "runs").iterdir())
