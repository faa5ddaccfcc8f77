"""Sharded batch translation: ``torchrun --nproc-per-node N -m cyclegan translate DIR --out OUT``.

Every process plans the same outputs from the same inputs (``files._plan`` sorts what it finds) and
looks at which already exist; after a barrier, each takes every ``world_size``-th *window* of the
images still to do (the windows a single process would translate: ``2 x batch_size`` files, so the
same images share a batch and the outputs are byte for byte a single process's, given the same
hardware and thread count) and every ``world_size``-th video. No two processes write the same file.
Problems found while planning (a missing input, a collision) are reported by process 0 only;
a file that fails to translate, by the process that had it. The counts are summed over processes
(times: the slowest) so process 0 prints one summary line. Processes talk through gloo whatever the
device: only counts and flags travel. Across nodes the inputs and ``--out`` must be on a shared
file system.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.distributed as dist

from cyclegan.distributed import DistInfo, barrier, from_environment, init, shutdown
from cyclegan.errors import TranslateError

if TYPE_CHECKING:
    from cyclegan.translate.files import TranslateSummary

__all__ = ["all_looked", "check_group", "main_first", "merge_summaries", "shard_group", "share"]

T = TypeVar("T")


@contextlib.contextmanager
def shard_group(info: DistInfo | None = None) -> Iterator[DistInfo]:
    """This process's place in a torchrun job (a single process outside one), with a gloo process
    group while the block runs; the group is torn down after it (without the final barrier after an
    error, which peers may never reach)."""
    info = info if info is not None else from_environment()
    started = info.enabled and not dist.is_initialized()
    if started:
        init(info, torch.device("cpu"))  # gloo: only counts and flags travel
    clean = False
    try:
        yield info
        clean = True
    finally:
        if started:
            shutdown(info, clean=clean)


def _broadcast_ok(ok: bool | None) -> bool:
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


@contextlib.contextmanager
def main_first(info: DistInfo) -> Iterator[None]:
    """Process 0 runs the block first (filling a cache: the ONNX export, the int8 model); the others
    run it after, reading what it made. If process 0 fails, the others stop with one line each."""
    if not info.enabled:
        yield
        return
    if info.is_main:
        try:
            yield
        except BaseException:
            _broadcast_ok(False)
            raise
        _broadcast_ok(True)
        return
    if not _broadcast_ok(None):
        raise TranslateError(f"process {info.rank}: stopped because process 0 failed (its error is above)")
    yield


def check_group(info: DistInfo) -> None:
    if info.enabled and not dist.is_initialized():
        raise TranslateError("a sharded translation needs its process group: run it inside shard_group()")


def share(items: Sequence[T], info: DistInfo) -> list[T]:
    """This process's items: every ``world_size``-th, starting at its rank."""
    return list(items[info.rank :: info.world_size]) if info.enabled else list(items)


def all_looked(info: DistInfo) -> None:
    """Every process has checked which outputs exist before any process writes one."""
    barrier(info)


def merge_summaries(summary: TranslateSummary, info: DistInfo) -> TranslateSummary:
    """Counts summed over processes, times the slowest process's (in place; returned). ``failures``
    stays this process's own list."""
    if not info.enabled:
        return summary
    counts = torch.tensor([summary.translated, summary.skipped, summary.failed, summary.images,
                           summary.videos, summary.frames], dtype=torch.int64)
    times = torch.tensor([summary.seconds, summary.image_seconds, summary.video_seconds], dtype=torch.float64)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    (summary.translated, summary.skipped, summary.failed, summary.images, summary.videos,
     summary.frames) = (int(v) for v in counts.tolist())
    summary.seconds, summary.image_seconds, summary.video_seconds = (float(v) for v in times.tolist())
    return summary
