"""Unpaired image datasets: finding the two domains, loading robustly, augmenting, batching.

Batches are uint8 ``[B, 3, H, W]`` tensors; the training step moves them to the device and
normalises there with ``image.to_model_range`` (4x less host-to-device traffic than float32).

Augmentation randomness comes from a per-sample seed derived from (run seed, epoch, position), not
from worker RNG state, so the data stream is identical for any ``num_workers`` and resumes exactly
mid-epoch.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from cyclegan.config import DataConfig
from cyclegan.errors import DataError, ImageLoadError
from cyclegan.image import IMAGE_EXTENSIONS, load_image, pil_to_uint8
from cyclegan.npz import ArrayImages


def find_images(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension), sorted so runs are reproducible."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files)


def _domain_dir(root: Path, split: str, domain: str) -> Path | None:
    """``root/trainA``; for B also the Kaggle "Real to Ghibli" layout ``trainB_<style>``."""
    exact = root / f"{split}{domain}"
    if exact.is_dir():
        return exact
    # The Kaggle folder is written both as "trainB_ghibli" and "trainB ghibli".
    styled = sorted(p for p in root.glob(f"{split}{domain}[_ ]*") if p.is_dir())
    if len(styled) > 1:
        raise DataError(
            f"{root}: several {split}{domain}_* folders ({', '.join(p.name for p in styled)}); "
            "pick one with --data-a/--data-b"
        )
    return styled[0] if styled else None


def resolve_domains(cfg: DataConfig, split: str = "train") -> tuple[Path, Path]:
    """The (A, B) folders of ``split`` ("train" or "test") from ``--data-a/--data-b`` or ``--dataroot``."""
    if split == "train" and (cfg.data_a or cfg.data_b):
        if not (cfg.data_a and cfg.data_b):
            raise DataError("--data-a and --data-b go together: give both folders")
        return Path(cfg.data_a), Path(cfg.data_b)
    if not cfg.dataroot:
        if split == "train":
            raise DataError("no training data: give --dataroot DIR or --data-a DIR --data-b DIR")
        raise DataError(f"no {split} split: --data-a/--data-b runs have no {split}A/{split}B folders")
    root = Path(cfg.dataroot)
    if not root.is_dir():
        raise DataError(f"{root}: dataroot folder not found")
    a, b = _domain_dir(root, split, "A"), _domain_dir(root, split, "B")
    missing = [name for name, d in ((f"{split}A", a), (f"{split}B", b)) if d is None]
    if missing:
        raise DataError(f"{root}: no {' or '.join(missing)} folder (expected {split}A and {split}B)")
    return a, b


def _usable_images(folder: Path, max_size: int) -> list[Path]:
    files = find_images(folder)
    if max_size:
        files = files[:max_size]
    return files


# ----------------------------------------------------------------------------------------------
# Transforms (pix2pix's random jitter, Isola et al., CVPR 2017, appendix 6.2, kept by CycleGAN's code in
# data/base_dataset.py: resize 286 -> random crop 256 -> random flip -> [-1, 1])


def _scale_width(img: Image.Image, width: int, min_height: int) -> Image.Image:
    w, h = img.size
    if w == width and h >= min_height:
        return img
    new_h = max(round(width * h / w), min_height)
    return img.resize((width, new_h), Image.BICUBIC)


def augment(img: Image.Image, cfg: DataConfig, rng: random.Random | None) -> Image.Image:
    """Resize/crop/flip per ``cfg.preprocess``. ``rng=None`` is the deterministic eval path
    (centre crop, no flip), used for the fixed sample grid."""
    size = cfg.crop_size
    mode = cfg.preprocess
    if mode == "resize_and_crop":
        img = img.resize((cfg.load_size, cfg.load_size), Image.BICUBIC)
    elif mode in ("scale_width", "scale_width_and_crop"):
        target = size if mode == "scale_width" else cfg.load_size
        img = _scale_width(img, target, size)
    if mode in ("resize_and_crop", "scale_width_and_crop", "crop"):
        w, h = img.size
        if w < size or h < size:  # crop needs room: upscale the short side first
            scale = size / min(w, h)
            img = img.resize((max(size, math.ceil(w * scale)), max(size, math.ceil(h * scale))),
                             Image.BICUBIC)
            w, h = img.size
        if rng is None:
            x, y = (w - size) // 2, (h - size) // 2
        else:
            x, y = rng.randint(0, w - size), rng.randint(0, h - size)
        img = img.crop((x, y, x + size, y + size))
    elif mode == "scale_width":
        w, h = img.size
        if h != size:  # batches need one shape: centre-crop the height
            y = (h - size) // 2
            img = img.crop((0, y, w, y + size))
    elif mode == "none" and img.size != (size, size):
        # Still square to crop_size so images of different sizes can share a batch.
        img = img.resize((size, size), Image.BICUBIC)
    if rng is not None and cfg.flip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


# ----------------------------------------------------------------------------------------------
# Dataset and sampler


def _sample_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_000_033 + position


class UnpairedSampler(Sampler):
    """Yields ``(index_a, index_b, aug_seed)`` for one epoch: A in a shuffled order (repeated to cover
    the larger domain), B drawn independently, as unaligned CycleGAN data is (paper sec. 5).

    The order is a pure function of (seed, epoch), so ``set_epoch(e, start=k)`` resumes exactly at
    this process's sample k. With ``world_size`` processes of ``batch_size`` each, global batch j is
    positions [j*W*B, (j+1)*W*B) of the epoch order and process r takes the r-th block of B: gathered
    in rank order, the processes' batches are exactly the single-process batch of size W*B.
    """

    def __init__(
        self, *, n_a: int, n_b: int, seed: int, rank: int = 0, world_size: int = 1, batch_size: int = 1
    ):
        self.n_a, self.n_b, self.seed = n_a, n_b, seed
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.epoch, self.start = 0, 0

    @property
    def epoch_size(self) -> int:
        """Samples per epoch over all processes (the larger domain, as in the paper's code)."""
        block = self.world_size * self.batch_size
        return max(self.n_a, self.n_b) // block * block

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = self.epoch_size
        reps = -(-n // self.n_a)
        order_a = np.concatenate([rng.permutation(self.n_a) for _ in range(reps)])[:n]
        order_b = rng.integers(0, self.n_b, size=n)
        return order_a, order_b

    def _position(self, local: int) -> int:
        """This process's ``local``-th sample -> its position in the epoch order."""
        batch, within = divmod(local, self.batch_size)
        return (batch * self.world_size + self.rank) * self.batch_size + within

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        order_a, order_b = self._order()
        for local in range(self.start, len(order_a) // self.world_size):
            pos = self._position(local)
            yield int(order_a[pos]), int(order_b[pos]), _sample_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return max(0, self.epoch_size // self.world_size - self.start)  # start past the end: empty


def split_validation(files: list, fraction: float, *, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded random ``fraction`` of ``files`` held out (at least one)."""
    if fraction <= 0:
        return list(files), []
    rng = np.random.default_rng([seed, 7])
    n_val = max(1, round(len(files) * fraction))
    held = set(rng.permutation(len(files))[:n_val].tolist())
    if isinstance(files, ArrayImages):  # split the .npz's rows; listing it would decode every image
        return (files.select([i for i in range(len(files)) if i not in held]),
                files.select(sorted(held)))
    return [f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held]


class UnpairedImages(Dataset):
    """Two folders of images, indexed by ``(index_a, index_b, aug_seed)`` from ``UnpairedSampler``.

    A file that fails to decode mid-epoch is replaced by the next good one in its domain, with a
    warning naming it once; files are checked before training (``check_files``) so this is rare.
    """

    def __init__(self, files_a: Sequence[Path], files_b: Sequence[Path], cfg: DataConfig):
        # An ArrayImages (a domain packed in an .npz) stays as it is: listing it would decode it all.
        self.files = {d: f if isinstance(f, ArrayImages) else list(f)
                      for d, f in (("A", files_a), ("B", files_b))}
        self.cfg = cfg

    def _load(self, domain: str, index: int, rng: random.Random | None) -> torch.Tensor:
        files = self.files[domain]
        for step in range(len(files)):
            path = files[(index + step) % len(files)]
            try:
                img = path if isinstance(path, Image.Image) else load_image(path)  # .npz entries are images
                return pil_to_uint8(augment(img, self.cfg, rng))  # [3, S, S] uint8
            except ImageLoadError as e:
                warnings.warn(f"skipping unreadable image {e}", stacklevel=2)
        raise DataError(f"no readable images left in domain {domain}")

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        index_a, index_b, seed = key
        rng = random.Random(seed)
        return {"A": self._load("A", index_a, rng), "B": self._load("B", index_b, rng)}

    def fixed_batch(self, n: int) -> dict[str, torch.Tensor]:
        """The first ``n`` images of each domain, centre-cropped: the sample grid's fixed inputs."""
        return {
            d: torch.stack([self._load(d, i, None) for i in range(min(n, len(self.files[d])))])
            for d in ("A", "B")
        }


# ----------------------------------------------------------------------------------------------
# Edge-smoothed style images (CartoonGAN's edge-promoting loss, ``loss.lambda_edge_promote``)


def training_scale(img: Image.Image, cfg: DataConfig) -> Image.Image:
    """The part of ``augment`` that does not depend on the sample: the resize before cropping.

    Edge smoothing blurs a few pixels, so it must happen at the scale the network sees; copies made
    at this scale then go through ``augment`` again unchanged in size."""
    if cfg.preprocess == "resize_and_crop":
        return img.resize((cfg.load_size, cfg.load_size), Image.BICUBIC)
    if cfg.preprocess in ("scale_width", "scale_width_and_crop"):
        target = cfg.crop_size if cfg.preprocess == "scale_width" else cfg.load_size
        return _scale_width(img, target, cfg.crop_size)
    return img


def training_scale_key(cfg: DataConfig) -> str:
    """Names ``training_scale`` for a cache of copies made at it (changes when the scale changes)."""
    return f"preprocess {cfg.preprocess}, load_size {cfg.load_size}, crop_size {cfg.crop_size}"


def edge_smoothed_files(files: Sequence[Path] | ArrayImages, style_dir: Path, smooth_dir: Path) -> list[Path]:
    """The smoothed copy of every style file: the same path relative to ``style_dir``, under
    ``smooth_dir``, as .png (what ``cyclegan prep edge-smooth`` writes). DataError when the style
    domain is an .npz or any copy is missing, before training starts."""
    if isinstance(files, ArrayImages):
        raise DataError(f"{style_dir}: loss.lambda_edge_promote needs the style domain as a folder of "
                        "images, not an .npz array")
    style_dir, smooth_dir = Path(style_dir), Path(smooth_dir)
    copies = [(smooth_dir / Path(f).relative_to(style_dir)).with_suffix(".png") for f in files]
    missing = [c for c in copies if not c.is_file()]
    if missing:
        raise DataError(f"{smooth_dir}: {len(missing)} of {len(copies)} edge-smoothed copies missing (e.g. "
                        f"{missing[0].relative_to(smooth_dir)}); make them with `cyclegan prep edge-smooth "
                        f"{style_dir} --out {smooth_dir}`")
    return copies


class UnpairedWithSmoothed(UnpairedImages):
    """``UnpairedImages`` plus, for each domain in ``smoothed``, the edge-smoothed copy of the very
    image drawn for that domain under key ``"<domain>_smooth"``, with the same crop and flip.

    AnimeGAN pairs each style image with its own smoothed copy in this way, so the only thing the
    discriminator can tell apart is the sharpness of the outlines. The "A" and "B" images are the ones
    ``UnpairedImages`` gives for the same key (the copy replays the random draws of its original), so
    the data stream, and a resumed run's, is unchanged by switching the term on."""

    def __init__(self, files_a: Sequence[Path], files_b: Sequence[Path], cfg: DataConfig, *,
                 smoothed: dict[str, Sequence[Path]]):
        super().__init__(files_a, files_b, cfg)
        for domain, copies in smoothed.items():
            if domain not in self.files:
                raise ValueError(f"smoothed copies for unknown domain {domain!r}")
            if len(copies) != len(self.files[domain]):
                raise DataError(f"domain {domain}: {len(copies)} edge-smoothed copies for "
                                f"{len(self.files[domain])} images")
        self.smoothed = {d: list(c) for d, c in smoothed.items()}

    def _load_copy(self, domain: str, index: int, rng: random.Random) -> torch.Tensor:
        copies = self.smoothed[domain]
        for step in range(len(copies)):
            try:
                return pil_to_uint8(augment(load_image(copies[(index + step) % len(copies)]), self.cfg, rng))
            except ImageLoadError as e:
                warnings.warn(f"skipping unreadable edge-smoothed image {e}", stacklevel=2)
        raise DataError(f"no readable edge-smoothed images left in domain {domain}")

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        index_a, index_b, seed = key
        rng = random.Random(seed)
        out = {}
        for domain, index in (("A", index_a), ("B", index_b)):  # the order UnpairedImages draws in
            state = rng.getstate()
            out[domain] = self._load(domain, index, rng)
            if domain in self.smoothed:
                twin = random.Random()
                twin.setstate(state)
                out[f"{domain}_smooth"] = self._load_copy(domain, index, twin)  # [3, S, S] uint8
        return out


def check_files(files: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split into (readable, [(unreadable, reason)]). Opening headers only would miss truncated files,
    so every image is decoded once; this is the price of never crashing mid-epoch."""
    good, bad = [], []
    for path in files:
        try:
            load_image(path)
            good.append(path)
        except ImageLoadError as e:
            bad.append((path, e.reason))
    return good, bad


@dataclass
class DomainFiles:
    a: list[Path] | ArrayImages  # ArrayImages when the domain is an .npz file
    b: list[Path] | ArrayImages
    skipped: list[tuple[Path, str]]


def gather_training_files(cfg: DataConfig, *, batch_size: int, split: str = "train") -> DomainFiles:
    """Find, decode-check and size-check both domains; raise DataError before any training work."""
    dir_a, dir_b = resolve_domains(cfg, split)
    found, skipped = {}, []
    for name, folder in (("A", dir_a), ("B", dir_b)):
        if folder.suffix.lower() == ".npz":  # a domain packed as one uint8 array (prep pack)
            images = ArrayImages(folder, key=cfg.npz_key_a if name == "A" else cfg.npz_key_b,
                                 limit=cfg.max_dataset_size)
            if len(images) < batch_size:
                raise DataError(f"{folder}: domain {name} has {len(images)} image(s), fewer than the batch "
                                f"size {batch_size}")
            found[name] = images
            continue
        files = _usable_images(folder, cfg.max_dataset_size)
        if not files:
            raise DataError(f"{folder}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        good, bad = check_files(files)
        skipped += bad
        if len(good) < batch_size:
            # The skip warning is never printed when we stop here, so say why files were unusable.
            why = f" ({len(bad)} unreadable, e.g. {bad[0][0].name}: {bad[0][1]})" if bad else ""
            raise DataError(
                f"{folder}: domain {name} has {len(good)} usable image(s){why}, fewer than the batch size "
                f"{batch_size}"
            )
        found[name] = good
    return DomainFiles(found["A"], found["B"], skipped)


# Headers read per domain by small_image_warning: enough to tell "most images" from a few odd ones,
# and cheap on any disk (PIL's open reads the header only; no pixel is decoded).
SIZE_SAMPLE = 50


def _sampled_sizes(files: Sequence[Path] | ArrayImages, n: int) -> list[tuple[int, int]]:
    """(width, height) of up to ``n`` images spread evenly over ``files``."""
    if not len(files):
        return []
    if isinstance(files, ArrayImages):  # one [N, H, W, 3] array: every image has the first one's size
        return [files[0].size]
    step = max(1, len(files) // n)
    sizes = []
    for path in list(files)[::step][:n]:
        try:
            with Image.open(path) as img:  # lazy: parses the header, decodes nothing
                sizes.append(img.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # unreadable files are check_files' business; this is only a hint
    return sizes


JITTER_RATIO = 286 / 256  # the paper's load size over its crop size


def small_image_warning(files: DomainFiles, cfg: DataConfig) -> str | None:
    """One line (no "warning:" prefix) when most sampled training images of a domain are smaller than
    the size ``cfg.preprocess`` scales them to, else None.

    The defaults are the paper's 256px recipe (resize to 286, random 256 crop); on 128px images
    (horse2zebra-128) that upscales every image 2.2x and trains at a resolution the data does not have,
    silently. Reads at most SIZE_SAMPLE headers per domain.
    """
    if cfg.preprocess in ("resize_and_crop", "scale_width_and_crop"):
        key, target = "data.load_size", cfg.load_size
    else:  # scale_width scales to the crop size; crop and none upscale what is below it
        key, target = "data.crop_size", cfg.crop_size
    by_width = cfg.preprocess in ("scale_width", "scale_width_and_crop")  # only the width is scaled
    slack = JITTER_RATIO if key == "data.load_size" else 1.0

    small_domains = []
    typical = []
    for domain, domain_files in (("A", files.a), ("B", files.b)):
        sizes = _sampled_sizes(domain_files, SIZE_SAMPLE)
        measured = sorted(((w if by_width else min(w, h)), (w, h)) for w, h in sizes)
        # The paper upscales 256px images to 286 on purpose (random-crop jitter): below the load size,
        # only sizes under that ratio (horse2zebra-128 at the default 286) are worth a warning.
        n_small = sum(1 for m, _ in measured if m * slack < target)
        if measured and n_small * 2 > len(measured):
            m, (w, h) = measured[len(measured) // 2]  # the median image
            small_domains.append(f"domain {domain}: {n_small} of {len(measured)} sampled, typically {w}x{h}")
            typical.append(m)
    if not small_domains:
        return None
    side = min(typical)
    # A crop a little below the images' size keeps the random-crop augmentation (the paper's 256 of 286);
    # multiples of 16 suit every shipped ResNet-family generator (U-Nets need 128 or 256 and say so).
    crop = side * 256 // 286 // 16 * 16
    if key == "data.load_size":
        hint = f"e.g. --load-size {side} --crop-size {crop}" if crop >= 8 else "--load-size/--crop-size"
    else:
        crop = side // 16 * 16
        hint = f"e.g. --crop-size {crop}" if crop >= 8 else "--crop-size"
    return (
        f"most training images are smaller than {key} {target} ({'; '.join(small_domains)}): each is "
        f"upscaled before training at data.crop_size {cfg.crop_size}, which blurs detail and costs time; "
        f"to train at the images' own scale pass {hint}"
    )


def make_loader(
    dataset: UnpairedImages,
    sampler: UnpairedSampler,
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    # More workers than cores only adds contention; the data stream does not depend on the count.
    num_workers = min(num_workers, os.cpu_count() or 1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        # Constant batch shapes keep compiled graphs and CUDA graphs from re-specialising.
        drop_last=True,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        # A private generator: creating an epoch's iterator must not draw from the global RNG,
        # or a resumed run would see a different global RNG stream than an uninterrupted one.
        generator=torch.Generator().manual_seed(sampler.seed),
    )
