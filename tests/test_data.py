"""Datasets: finding the two domains, robust loading, augmentation, and the seeded unpaired sampler.

Everything runs on tiny images the tests generate themselves (cyclegan.synthetic), never on
../shared, so the file is fast and needs no download.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from cyclegan.config import PREPROCESS, DataConfig
from cyclegan.data import (
    DomainFiles,
    UnpairedImages,
    UnpairedSampler,
    UnpairedWithSmoothed,
    augment,
    edge_smoothed_files,
    find_images,
    gather_training_files,
    make_loader,
    resolve_domains,
    small_image_warning,
    training_scale,
    training_scale_key,
)
from cyclegan.errors import DataError
from cyclegan.npz import ArrayImages
from cyclegan.synthetic import make_bad_files, make_odd_images, make_unpaired_dataset

# Small sizes keep every decode and resize cheap; load > crop so the crop modes really crop.
LOAD, CROP = 20, 16


def _cfg(**kw) -> DataConfig:
    base = {"load_size": LOAD, "crop_size": CROP, "num_workers": 0}
    base.update(kw)
    return DataConfig(**base)


def _png(path: Path, size=(24, 24), colour=(10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    # 6 train images per domain (24px) and 2 test images: enough for batches of 2 and 3 epochs.
    return make_unpaired_dataset(tmp_path_factory.mktemp("data"), n_train=6, n_test=2, size=24, seed=3)


# ------------------------------------------------------------------------------------- find_images


def test_find_images_extensions_recursive_sorted(tmp_path):
    # Every supported extension, in mixed case and nested folders; other files must be ignored.
    wanted = [
        tmp_path / "a.JPG",
        tmp_path / "b.jpeg",
        tmp_path / "c.png",
        tmp_path / "sub" / "d.webp",
        tmp_path / "sub" / "deeper" / "e.BMP",
        tmp_path / "f.tif",
        tmp_path / "g.Tiff",
    ]
    for p in wanted:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")  # find_images goes by name only; decoding is check_files' job
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "anim.gif").write_bytes(b"GIF89a")
    (tmp_path / "README").write_text("no extension")
    (tmp_path / "folder.png").mkdir()  # a directory with an image-like name is not a file

    found = find_images(tmp_path)
    assert found == sorted(wanted)
    assert find_images(tmp_path, recursive=False) == sorted(p for p in wanted if p.parent == tmp_path)


def test_find_images_missing_folder_and_file(tmp_path):
    with pytest.raises(DataError, match="nope: folder not found"):
        find_images(tmp_path / "nope")
    f = _png(tmp_path / "x.png")
    with pytest.raises(DataError, match="not a folder"):
        find_images(f)


# ---------------------------------------------------------------------------------- resolve_domains


def test_resolve_domains_standard_layout_and_test_split(dataroot):
    a, b = resolve_domains(_cfg(dataroot=str(dataroot)))
    assert (a, b) == (dataroot / "trainA", dataroot / "trainB")
    a, b = resolve_domains(_cfg(dataroot=str(dataroot)), "test")
    assert (a, b) == (dataroot / "testA", dataroot / "testB")


def test_resolve_domains_kaggle_ghibli_layout(tmp_path):
    # The Kaggle "Real to Ghibli" dataset ships trainA/ and trainB_ghibli/.
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainB_ghibli").mkdir()
    assert resolve_domains(_cfg(dataroot=str(tmp_path))) == (tmp_path / "trainA", tmp_path / "trainB_ghibli")


def test_resolve_domains_exact_name_beats_styled(tmp_path):
    for name in ("trainA", "trainB", "trainB_ghibli"):
        (tmp_path / name).mkdir()
    assert resolve_domains(_cfg(dataroot=str(tmp_path)))[1] == tmp_path / "trainB"


def test_resolve_domains_two_styled_b_folders_is_ambiguous(tmp_path):
    for name in ("trainA", "trainB_ghibli", "trainB_anime"):
        (tmp_path / name).mkdir()
    with pytest.raises(DataError) as err:
        resolve_domains(_cfg(dataroot=str(tmp_path)))
    assert "trainB_anime" in str(err.value) and "trainB_ghibli" in str(err.value)
    assert "--data-a" in str(err.value)  # tells the user the way out


def test_resolve_domains_missing_b_names_the_folder(tmp_path):
    (tmp_path / "trainA").mkdir()
    with pytest.raises(DataError, match="no trainB folder") as err:
        resolve_domains(_cfg(dataroot=str(tmp_path)))
    assert str(tmp_path) in str(err.value)


def test_resolve_domains_missing_dataroot(tmp_path):
    with pytest.raises(DataError, match="dataroot folder not found"):
        resolve_domains(_cfg(dataroot=str(tmp_path / "absent")))
    with pytest.raises(DataError, match="--dataroot"):
        resolve_domains(_cfg())


def test_resolve_domains_data_a_b(tmp_path, dataroot):
    cfg = _cfg(data_a=str(tmp_path / "x"), data_b=str(tmp_path / "y"), dataroot=str(dataroot))
    assert resolve_domains(cfg) == (tmp_path / "x", tmp_path / "y")  # explicit folders win
    with pytest.raises(DataError, match="--data-a and --data-b go together"):
        resolve_domains(_cfg(data_a=str(tmp_path)))
    with pytest.raises(DataError, match="--data-a and --data-b go together"):
        resolve_domains(_cfg(data_b=str(tmp_path)))
    with pytest.raises(DataError, match="no test split"):
        resolve_domains(_cfg(data_a=str(tmp_path), data_b=str(tmp_path)), "test")


# ------------------------------------------------------------------------------------------ augment


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    # Random pixels, so any change of crop position or flip changes the output.
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", PREPROCESS)
@pytest.mark.parametrize("wh", [(50, 30), (30, 50), (12, 9)])
def test_augment_output_is_crop_size_for_every_mode(mode, wh):
    # Batches need one shape: every mode must end at crop_size x crop_size, for landscape, portrait
    # and images smaller than the crop alike, on both the training and the eval path.
    cfg = _cfg(preprocess=mode)
    img = _noise(*wh)
    for rng in (random.Random(1), None):
        out = augment(img, cfg, rng)
        assert out.size == (CROP, CROP), (mode, wh, rng)
        assert out.mode == "RGB"


@pytest.mark.parametrize("mode", PREPROCESS)
def test_augment_is_deterministic_for_a_seed(mode):
    cfg = _cfg(preprocess=mode)
    img = _noise(50, 30)
    runs = [np.asarray(augment(img, cfg, random.Random(seed))) for seed in (7, 7, 8, 9, 10, 11)]
    assert np.array_equal(runs[0], runs[1])
    # ...and the randomness is real: some seed gives a different crop or flip.
    assert any(not np.array_equal(runs[0], r) for r in runs[2:])


def test_augment_eval_path_is_centre_crop_without_flip():
    img = _noise(40, 24)
    cfg = _cfg(preprocess="crop", flip=True)
    # 40x24 -> centre 16x16 at x=(40-16)//2=12, y=(24-16)//2=4; flip=True must not apply with rng=None.
    expected = np.asarray(img.crop((12, 4, 28, 20)))
    for _ in range(3):
        assert np.array_equal(np.asarray(augment(img, cfg, None)), expected)


def test_augment_flip_off_never_flips():
    img = _noise(16, 16)
    cfg = _cfg(preprocess="none", flip=False)
    for seed in range(20):
        assert np.array_equal(np.asarray(augment(img, cfg, random.Random(seed))), np.asarray(img))


def test_augment_flip_on_flips_some_seeds():
    img = _noise(16, 16)
    cfg = _cfg(preprocess="none", flip=True)
    flipped = np.asarray(img)[:, ::-1]
    outs = [np.asarray(augment(img, cfg, random.Random(seed))) for seed in range(20)]
    assert any(np.array_equal(o, flipped) for o in outs)
    assert any(np.array_equal(o, np.asarray(img)) for o in outs)


# ---------------------------------------------------------------------------------- UnpairedSampler


def _keys(sampler: UnpairedSampler) -> list[tuple[int, int, int]]:
    return list(sampler)


def test_sampler_order_depends_only_on_seed_and_epoch():
    s1, s2 = UnpairedSampler(n_a=9, n_b=5, seed=4), UnpairedSampler(n_a=9, n_b=5, seed=4)
    s1.set_epoch(3)
    s2.set_epoch(3)
    assert _keys(s1) == _keys(s2)
    assert _keys(s1) == _keys(s1)  # iterating again replays the same epoch
    s2.set_epoch(4)
    assert [k[:2] for k in _keys(s1)] != [k[:2] for k in _keys(s2)]
    other_seed = UnpairedSampler(n_a=9, n_b=5, seed=5)
    other_seed.set_epoch(3)
    assert [k[:2] for k in _keys(other_seed)] != [k[:2] for k in _keys(s1)]


def test_sampler_covers_every_a_image_when_a_is_larger():
    s = UnpairedSampler(n_a=11, n_b=4, seed=0)
    for epoch in (1, 2):
        s.set_epoch(epoch)
        keys = _keys(s)
        assert len(keys) == len(s) == 11
        assert sorted(a for a, _, _ in keys) == list(range(11))  # each A exactly once
        assert {b for _, b, _ in keys} <= set(range(4))
        assert len({seed for _, _, seed in keys}) == 11  # one augmentation seed per position


def test_sampler_epoch_is_the_larger_domain_when_b_is_larger():
    s = UnpairedSampler(n_a=3, n_b=10, seed=0)
    s.set_epoch(1)
    keys = _keys(s)
    assert len(keys) == 10
    assert {a for a, _, _ in keys} == {0, 1, 2}  # A repeats to fill the epoch
    assert {b for _, b, _ in keys} <= set(range(10))


@pytest.mark.parametrize("start", [0, 1, 5, 9, 10])
def test_sampler_start_resumes_at_exactly_the_tail(start):
    s = UnpairedSampler(n_a=10, n_b=6, seed=2)
    s.set_epoch(5)
    full = _keys(s)
    s.set_epoch(5, start=start)
    tail = _keys(s)
    assert tail == full[start:]
    assert len(s) == len(tail)


def test_sampler_start_past_the_end_is_empty():
    s = UnpairedSampler(n_a=4, n_b=4, seed=0)
    s.set_epoch(1, start=7)
    assert _keys(s) == [] and len(s) == 0


def test_sampler_shards_interleave_to_the_single_process_order():
    # 12 samples over 3 ranks: rank r takes positions r, r+3, ...; together they are the whole epoch.
    single = UnpairedSampler(n_a=12, n_b=5, seed=1)
    single.set_epoch(2)
    shards = []
    for rank in range(3):
        s = UnpairedSampler(n_a=12, n_b=5, seed=1, rank=rank, world_size=3)
        s.set_epoch(2)
        shards.append(_keys(s))
        assert len(s) == len(shards[-1]) == 4
    interleaved = [shards[pos % 3][pos // 3] for pos in range(12)]
    assert interleaved == _keys(single)


@pytest.mark.parametrize("start", [0, 2])
def test_sampler_shards_disjoint_and_equal_length(start):
    # 10 samples over 4 ranks: the epoch is cut to 8 so every rank gets the same number of batches.
    shards = []
    for rank in range(4):
        s = UnpairedSampler(n_a=10, n_b=3, seed=0, rank=rank, world_size=4)
        s.set_epoch(1, start=start)
        shards.append(_keys(s))
        assert len(shards[-1]) == len(s) == 2 - start
    seeds = [k[2] for shard in shards for k in shard]
    assert len(seeds) == len(set(seeds))  # no position is used twice
    if start == 0:
        assert len(seeds) == 8


# ---------------------------------------------------------------------- UnpairedImages + make_loader


def _dataset(dataroot: Path, **cfg) -> tuple[UnpairedImages, DataConfig]:
    c = _cfg(**cfg)
    files = gather_training_files(_cfg(dataroot=str(dataroot)), batch_size=1)
    return UnpairedImages(files.a, files.b, c), c


def _batches(dataset, *, seed: int, epoch: int, batch_size: int, num_workers: int, start: int = 0):
    sampler = UnpairedSampler(n_a=len(dataset.files["A"]), n_b=len(dataset.files["B"]), seed=seed)
    sampler.set_epoch(epoch, start=start)
    loader = make_loader(dataset, sampler, batch_size=batch_size, num_workers=num_workers, pin_memory=False)
    return [(b["A"].clone(), b["B"].clone()) for b in loader]


def test_loader_batches_are_uint8_crops(dataroot):
    dataset, _ = _dataset(dataroot)
    batches = _batches(dataset, seed=0, epoch=1, batch_size=4, num_workers=0)
    assert len(batches) == 1  # 6 samples, batch 4, drop_last: constant shapes for compiled graphs
    for a, b in batches:
        for t in (a, b):
            assert t.dtype == torch.uint8
            assert t.shape == (4, 3, CROP, CROP)


def test_loader_same_batches_for_any_num_workers(dataroot):
    # Augmentation seeds come from (seed, epoch, position), not worker RNG: the stream must not
    # depend on the number of workers, or a run would change when the user changes --num-workers.
    dataset, _ = _dataset(dataroot)
    serial = _batches(dataset, seed=11, epoch=2, batch_size=2, num_workers=0)
    parallel = _batches(dataset, seed=11, epoch=2, batch_size=2, num_workers=2)
    assert len(serial) == len(parallel) == 3
    for (a0, b0), (a1, b1) in zip(serial, parallel):
        assert torch.equal(a0, a1) and torch.equal(b0, b1)


def test_loader_epochs_differ_and_mid_epoch_start_replays_the_tail(dataroot):
    dataset, _ = _dataset(dataroot)
    e1 = _batches(dataset, seed=0, epoch=1, batch_size=2, num_workers=0)
    e2 = _batches(dataset, seed=0, epoch=2, batch_size=2, num_workers=0)
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(e1, e2))
    # Resuming after 1 batch of 2 = starting the sampler at sample 2: the remaining batches, bit for bit.
    tail = _batches(dataset, seed=0, epoch=1, batch_size=2, num_workers=0, start=2)
    assert len(tail) == len(e1) - 1
    for (a0, b0), (a1, b1) in zip(e1[1:], tail):
        assert torch.equal(a0, a1) and torch.equal(b0, b1)


def test_fixed_batch_is_deterministic_centre_crops(dataroot):
    dataset, _ = _dataset(dataroot, flip=True)
    first, again = dataset.fixed_batch(3), dataset.fixed_batch(3)
    for d in ("A", "B"):
        assert first[d].shape == (3, 3, CROP, CROP) and first[d].dtype == torch.uint8
        assert torch.equal(first[d], again[d])
    assert dataset.fixed_batch(50)["A"].shape[0] == 6  # capped at the domain size


# ---------------------------------------------------------------------------- gather_training_files


def _domains(root: Path, n_a: int = 2, n_b: int = 2) -> DataConfig:
    for i in range(n_a):
        _png(root / "A" / f"{i}.png")
    for i in range(n_b):
        _png(root / "B" / f"{i}.png", colour=(200, 20, 20))
    return _cfg(data_a=str(root / "A"), data_b=str(root / "B"))


def test_gather_accepts_every_odd_image_kind(tmp_path):
    # Gray, palette, RGBA/LA, CMYK, 16-bit PNG, EXIF-rotated JPEG, webp, bmp, tif: all usable RGB.
    odd = make_odd_images(tmp_path / "A")
    cfg = _domains(tmp_path, n_a=0, n_b=len(odd))
    files = gather_training_files(cfg, batch_size=len(odd))  # every one of them counts as usable
    assert sorted(files.a) == sorted(odd.values())
    assert files.skipped == []
    dataset = UnpairedImages(files.a, files.b, cfg)
    for i in range(len(files.a)):
        t = dataset._load("A", i, random.Random(i))
        assert t.dtype == torch.uint8 and t.shape == (3, CROP, CROP)


def test_gather_skips_bad_files_with_reasons(tmp_path):
    bad = make_bad_files(tmp_path / "A")
    cfg = _domains(tmp_path, n_a=3)
    files = gather_training_files(cfg, batch_size=2)
    assert len(files.a) == 3 and len(files.b) == 2
    assert sorted(p for p, _ in files.skipped) == sorted(bad.values())
    reasons = dict(files.skipped)
    assert all(reason.strip() for reason in reasons.values())
    assert "empty" in reasons[bad["zero_byte"]]


def test_gather_too_few_images_for_batch_size(tmp_path):
    cfg = _domains(tmp_path, n_a=3, n_b=2)
    with pytest.raises(DataError) as err:
        gather_training_files(cfg, batch_size=3)
    msg = str(err.value)
    assert str(tmp_path / "B") in msg and "2 usable" in msg and "batch size 3" in msg


def test_gather_bad_files_do_not_count_towards_batch_size(tmp_path):
    make_bad_files(tmp_path / "A")  # 4 files with image names, 1 good one
    cfg = _domains(tmp_path, n_a=1)
    with pytest.raises(DataError) as err:
        gather_training_files(cfg, batch_size=2)
    # Stopping here means the skip warning is never printed, so the error itself says why.
    assert "1 usable" in str(err.value) and "4 unreadable" in str(err.value)


def test_gather_all_corrupt_domain(tmp_path):
    make_bad_files(tmp_path / "A")
    cfg = _domains(tmp_path, n_a=0)
    with pytest.raises(DataError, match="0 usable image.*unreadable") as err:
        gather_training_files(cfg, batch_size=1)
    assert str(tmp_path / "A") in str(err.value)


def test_gather_empty_folder(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "notes.txt").write_text("no images here")
    cfg = _domains(tmp_path, n_a=0)
    with pytest.raises(DataError, match="no images found") as err:
        gather_training_files(cfg, batch_size=1)
    assert str(tmp_path / "A") in str(err.value)


def test_gather_missing_folder(tmp_path):
    cfg = _domains(tmp_path, n_a=2, n_b=0)  # B never created
    with pytest.raises(DataError, match="folder not found") as err:
        gather_training_files(cfg, batch_size=1)
    assert str(tmp_path / "B") in str(err.value)


def test_gather_max_dataset_size(tmp_path):
    cfg = _domains(tmp_path, n_a=5, n_b=4)
    files = gather_training_files(DataConfig(data_a=cfg.data_a, data_b=cfg.data_b, max_dataset_size=3),
                                  batch_size=1)
    assert len(files.a) == len(files.b) == 3
    assert files.a == find_images(tmp_path / "A")[:3]  # the first files in sorted order


# ----------------------------------------------------------------------------------------------
# Images smaller than the load size: one warning line, from headers only


def _domain(folder: Path, n: int, size) -> list[Path]:
    return [_png(folder / f"{i:03d}.png", size=size) for i in range(n)]


def test_small_images_warn_once_naming_the_flags(tmp_path):
    # horse2zebra-128 with the default config: every image is upscaled 128 -> 286 and cropped to 256.
    files = DomainFiles(_domain(tmp_path / "A", 3, (128, 128)), _domain(tmp_path / "B", 3, (128, 96)), [])
    message = small_image_warning(files, DataConfig())
    assert message is not None and "\n" not in message
    for needle in ("data.load_size", "286", "128x128", "--load-size", "--crop-size"):
        assert needle in message, (needle, message)


def test_no_warning_when_images_are_at_least_the_load_size(tmp_path):
    files = DomainFiles(_domain(tmp_path / "A", 3, (300, 290)), _domain(tmp_path / "B", 3, (286, 400)), [])
    assert small_image_warning(files, DataConfig()) is None


def test_no_warning_for_the_papers_own_jitter(tmp_path):
    # horse2zebra at 256px with the paper's 286 -> 256 crops: upscaled on purpose, no warning.
    files = DomainFiles(_domain(tmp_path / "A", 3, (256, 256)), _domain(tmp_path / "B", 3, (256, 256)), [])
    assert small_image_warning(files, DataConfig()) is None


def test_no_warning_when_only_a_minority_is_small(tmp_path):
    a = _domain(tmp_path / "A", 3, (300, 300)) + [_png(tmp_path / "A" / "small.png", size=(64, 64))]
    files = DomainFiles(a, _domain(tmp_path / "B", 2, (300, 300)), [])
    assert small_image_warning(files, DataConfig()) is None


def test_one_small_domain_is_enough_to_warn(tmp_path):
    files = DomainFiles(_domain(tmp_path / "A", 2, (300, 300)), _domain(tmp_path / "B", 2, (64, 64)), [])
    message = small_image_warning(files, DataConfig())
    assert message is not None and "B" in message


@pytest.mark.parametrize(
    "preprocess, size, warns",
    [
        ("crop", (200, 200), False),  # crop never resizes to load_size: 200 >= crop 128 is enough
        ("crop", (100, 100), True),  # smaller than the crop: upscaled
        ("none", (100, 100), True),  # resized to crop_size
        ("scale_width", (200, 100), False),  # the width is scaled to crop_size
        ("scale_width_and_crop", (120, 400), True),  # the width is scaled up to load_size
    ],
)
def test_the_size_compared_follows_preprocess(tmp_path, preprocess, size, warns):
    cfg = DataConfig(preprocess=preprocess, load_size=160, crop_size=128)
    files = DomainFiles(_domain(tmp_path / "A", 2, size), _domain(tmp_path / "B", 2, size), [])
    assert (small_image_warning(files, cfg) is not None) == warns


def test_small_image_check_reads_at_most_50_headers_and_decodes_nothing(tmp_path, monkeypatch):
    paths = _domain(tmp_path / "A", 120, (32, 32))
    opened, loaded = [], []
    real_open, real_load = Image.open, ImageFile.ImageFile.load

    def counting_open(fp, *args, **kwargs):
        opened.append(fp)
        return real_open(fp, *args, **kwargs)

    def counting_load(self):
        loaded.append(self)
        return real_load(self)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    message = small_image_warning(DomainFiles(paths, paths, []), DataConfig())
    assert message is not None
    assert 0 < len(opened) <= 2 * 50
    assert loaded == []  # header only: no pixel data decoded


def test_small_image_check_reads_npz_domains_from_the_array_shape(tmp_path):
    arr = np.zeros((4, 64, 48, 3), dtype=np.uint8)  # [N, H, W, 3]
    np.savez(tmp_path / "a.npz", images=arr)
    images = ArrayImages(tmp_path / "a.npz")
    message = small_image_warning(DomainFiles(images, images, []), DataConfig())
    assert message is not None and "48x64" in message


def test_small_image_check_skips_unreadable_headers(tmp_path):
    bad = tmp_path / "A" / "bad.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a png")
    files = DomainFiles([bad, *_domain(tmp_path / "A", 2, (300, 300))],
                        _domain(tmp_path / "B", 2, (300, 300)), [])
    assert small_image_warning(files, DataConfig()) is None


# ---------------------------------------------------------------------------- edge-smoothed style images


def _noise_png(path: Path, size, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3),
                                                         dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("mode", PREPROCESS)
def test_training_scale_is_the_sample_independent_part_of_augment(mode):
    cfg = _cfg(preprocess=mode)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    scaled = training_scale(img, cfg)
    for seed in range(4):
        assert np.array_equal(np.asarray(augment(scaled, cfg, random.Random(seed))),
                              np.asarray(augment(img, cfg, random.Random(seed))))
    assert training_scale_key(cfg) != training_scale_key(_cfg(preprocess=mode, load_size=LOAD + 4))


def test_smoothed_copies_come_with_the_same_crop_and_flip_and_leave_a_and_b_unchanged(tmp_path):
    files_a = [_noise_png(tmp_path / "a" / f"{i}.png", (30, 26), i) for i in range(3)]
    files_b = [_noise_png(tmp_path / "b" / "sub" / f"{i}.jpg", (28, 32), 10 + i) for i in range(4)]
    # Copies identical to their originals (as PNG): the pair must then match pixel for pixel.
    smooth = tmp_path / "smooth"
    for f in files_b:
        (smooth / "sub").mkdir(parents=True, exist_ok=True)
        Image.open(f).save((smooth / f.relative_to(tmp_path / "b")).with_suffix(".png"))
    copies = edge_smoothed_files(files_b, tmp_path / "b", smooth)
    assert copies[0] == smooth / "sub" / "0.png"
    cfg = _cfg(preprocess="resize_and_crop")
    plain = UnpairedImages(files_a, files_b, cfg)
    paired = UnpairedWithSmoothed(files_a, files_b, cfg, smoothed={"B": copies})
    sampler = UnpairedSampler(n_a=3, n_b=4, seed=5)
    flips = 0
    for key in sampler:
        want, got = plain[key], paired[key]
        assert set(got) == {"A", "B", "B_smooth"}
        assert torch.equal(got["A"], want["A"]) and torch.equal(got["B"], want["B"])
        assert torch.equal(got["B_smooth"], got["B"])
        flips += not torch.equal(got["B"], plain._load("B", key[1], None))
    assert flips  # the random crop and flip were really drawn


def test_missing_smoothed_copies_and_npz_style_domains_are_refused(tmp_path):
    files_b = [_png(tmp_path / "b" / f"{i}.png") for i in range(3)]
    (tmp_path / "smooth").mkdir()
    _png(tmp_path / "smooth" / "0.png")
    with pytest.raises(DataError, match=r"2 of 3 edge-smoothed copies missing \(e.g. 1.png\); make them with "
                                        r"`cyclegan prep edge-smooth"):
        edge_smoothed_files(files_b, tmp_path / "b", tmp_path / "smooth")
    arr = tmp_path / "b.npz"
    np.savez(arr, images=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="not an .npz array"):
        edge_smoothed_files(ArrayImages(arr), arr, tmp_path / "smooth")
    with pytest.raises(DataError, match="1 edge-smoothed copies for 3 images"):
        UnpairedWithSmoothed(files_b, files_b, _cfg(), smoothed={"B": [tmp_path / "smooth" / "0.png"]})
