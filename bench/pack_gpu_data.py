#!/usr/bin/env python
"""Pack the GPU suite's data beside the code: horse2zebra-128 and a 256-pixel subset of horse2zebra.

A device machine sees only the repository (plus the ignored paths a command carries, 64 MiB in
all), so ``bench/gpu_suite.py`` reads its images from one git-ignored folder made here:

    bench/data/gpu/horse2zebra-128/{trainA,trainB,testA,testB}   every image of the 128-px copy
    bench/data/gpu/horse2zebra-256/{trainA,trainB,testA,testB}   an evenly spaced subset at 256 px

The 256-pixel subset takes what the ``--max-mb`` budget leaves after the 128-pixel copy, the same
share of every folder, files copied byte for byte (no re-encoding). A second run checks the folder
and copies only what is missing.

    python bench/pack_gpu_data.py                       # from ../shared/datasets, 60 MB at most
    python bench/pack_gpu_data.py --source DIR --out bench/data/gpu --max-mb 60
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO.parent / "shared" / "datasets"
OUT = REPO / "bench" / "data" / "gpu"
SPLITS = ("trainA", "trainB", "testA", "testB")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MB = 10**6


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _spread(files: list[Path], share: float) -> list[Path]:
    """Every k-th file so that about ``share`` of them are kept, at least one."""
    n = max(1, min(len(files), round(len(files) * share)))
    return [files[int(i * len(files) / n)] for i in range(n)]


def _copy(files: list[Path], dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    copied = 0
    for f in files:
        target = dest / f.name
        if not target.is_file() or target.stat().st_size != f.stat().st_size:
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(f, tmp)
            tmp.replace(target)
            copied += 1
    return copied


def pack(source: Path, out: Path, *, max_mb: float) -> dict:
    small, large = source / "horse2zebra-128", source / "horse2zebra"
    for d in (small, large):
        missing = [s for s in SPLITS if not (d / s).is_dir()]
        if missing:
            raise SystemExit(f"error: {d}: no {', '.join(missing)} folder")
    summary = {"copied": 0}
    small_files = {s: _images(small / s) for s in SPLITS}
    small_bytes = sum(f.stat().st_size for fs in small_files.values() for f in fs)
    large_files = {s: _images(large / s) for s in SPLITS}
    large_bytes = sum(f.stat().st_size for fs in large_files.values() for f in fs)
    budget = max_mb * MB - small_bytes
    if budget <= 0:
        raise SystemExit(f"error: horse2zebra-128 alone is {small_bytes / MB:.1f} MB, over --max-mb "
                         f"{max_mb:g}")
    share = min(1.0, budget / large_bytes)
    while True:  # the spread picks may be larger than average: shrink the share until they fit
        chosen = {s: _spread(large_files[s], share) for s in SPLITS}
        if sum(f.stat().st_size for fs in chosen.values() for f in fs) <= budget or share < 0.01:
            break
        share *= 0.98
    for s in SPLITS:
        summary["copied"] += _copy(small_files[s], out / "horse2zebra-128" / s)
        summary["copied"] += _copy(chosen[s], out / "horse2zebra-256" / s)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    counts = {d: {s: len(_images(out / d / s)) for s in SPLITS} for d in ("horse2zebra-128",
                                                                          "horse2zebra-256")}
    return {**summary, "total_mb": total / MB, "share_256": share, "counts": counts}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--source", type=Path, default=SOURCE,
                   help="folder holding horse2zebra and horse2zebra-128")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--max-mb", type=float, default=60.0, help="size of the whole folder at most (MB)")
    args = p.parse_args(argv)
    result = pack(args.source, args.out, max_mb=args.max_mb)
    for name, counts in result["counts"].items():
        print(f"{args.out / name}: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    print(f"{result['total_mb']:.1f} MB in {args.out} ({result['copied']} files copied; "
          f"{result['share_256']:.0%} of horse2zebra at 256 px)")
    if result["total_mb"] > args.max_mb:
        print(f"error: {args.out} holds {result['total_mb']:.1f} MB, over --max-mb {args.max_mb:g} "
              "(files from an earlier, larger run?); remove it and pack again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
