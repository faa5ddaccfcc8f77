"""Sharded batch translation: two gloo processes under torchrun write exactly one process's files and
bytes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from cyclegan.cli import main
from cyclegan.distributed import DistInfo
from cyclegan.synthetic import make_scene
from cyclegan.translate.shard import share


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(root: Path) -> Path:
    """13 photos of three sizes (so batches mix and windows split unevenly), one in a subfolder,
    one corrupt file."""
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(13):
        size = (24, 32, 40)[i % 3]
        name = folder / ("sub" if i == 7 else "") / f"p{i:02d}.{'jpg' if i % 4 == 0 else 'png'}"
        Image.fromarray(make_scene(rng, size, "photo")).save(name)
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def _args(run: Path, photos: Path, out: Path, extra=()) -> list[str]:
    return ["translate", str(photos), "--model", str(run), "--out", str(out), "--recursive", "--precision",
            "fp32", "--threads", "1", "--batch-size", "2", "--quiet", *extra]


def _translate(run: Path, photos: Path, out: Path, *, processes: int,
               extra=()) -> subprocess.CompletedProcess:
    args = _args(run, photos, out, extra)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "cyclegan", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=240)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_gloo_processes_write_the_files_and_bytes_of_one(random_run, tmp_path):
    run = random_run(2)
    photos = _inputs(tmp_path)
    # The one-process reference runs in this process (the same command, one interpreter start less).
    single = CliRunner().invoke(main, _args(run, photos, tmp_path / "one"))
    sharded = _translate(run, photos, tmp_path / "two", processes=2)
    assert single.exit_code == sharded.returncode == 1, single.output  # the corrupt file fails in both
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len(one) == 13 and "sub/p07.png" in one and "p00.jpg" in one
    assert one.keys() == two.keys()
    assert [k for k in one if one[k] != two[k]] == []

    # One summary line with the whole job's counts, and the bad file reported once.
    lines = sharded.stderr.splitlines()
    summaries = [line for line in lines if line.startswith("translated ")]
    assert len(summaries) == 1 and summaries[0].startswith("translated 13, skipped 0, failed "
                                                           "1"), sharded.stderr
    assert sum("broken.png" in line for line in lines) == 1, sharded.stderr

    # A rerun skips what exists (counted once, left untouched) and writes the rest.
    removed = ("p01.png", "p05.png", "sub/p07.png")
    for name in removed:
        (tmp_path / "two" / name).unlink()
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "two").rglob("*") if p.is_file()}
    again = _translate(run, photos, tmp_path / "two", processes=2)
    summaries = [line for line in again.stderr.splitlines() if line.startswith("translated ")]
    assert len(summaries) == 1 and summaries[0].startswith("translated 3, skipped 10, failed 1"), again.stderr
    assert _files(tmp_path / "two").keys() == one.keys()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


def test_each_process_takes_a_disjoint_share_that_covers_the_job():
    items = list(range(11))
    shares = [share(items, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert sorted(x for s in shares for x in s) == items and all(len(s) in (3, 4) for s in shares)
    assert share(items, DistInfo()) == items
