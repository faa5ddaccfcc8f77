"""Bounded inference: a few worker threads and a fixed number of waiting places, then 503.

Translation is CPU/GPU-bound and runs in worker threads, never on the event loop, so health checks
and page loads stay instant while images are being translated. Each admitted request holds its
upload (and later its decoded pixels) in memory, so admission is capped at ``workers + queue_size``:
beyond that a request is refused at once with a ``Retry-After`` estimate instead of piling up.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["InferenceQueue", "QueueFull"]

T = TypeVar("T")

# Weight of the newest job in the running average of job durations behind Retry-After.
_EMA_WEIGHT = 0.2


class QueueFull(Exception):
    """Every worker is busy and every waiting place is taken."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"server busy: every worker and all waiting places are taken; "
                         f"retry in {retry_after} s")
        self.retry_after = retry_after


class InferenceQueue:
    def __init__(
        self, *, workers: int = 1, queue_size: int = 8, initializer: Callable[[], None] | None = None
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.workers = workers
        self.queue_size = queue_size
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="cyclegan-infer", initializer=initializer
        )
        # Jobs finish on worker threads while new ones are admitted on the event loop.
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._done = 0
        self._refused = 0
        self._avg_seconds: float | None = None

    @property
    def capacity(self) -> int:
        return self.workers + self.queue_size

    def ensure_space(self) -> None:
        """Raise QueueFull now if no place is free (a cheap check before reading an upload)."""
        with self._lock:
            full = self._admitted >= self.capacity
            if full:
                self._refused += 1
        if full:
            raise QueueFull(self.retry_after())

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead drained at the average job time."""
        with self._lock:
            avg = self._avg_seconds if self._avg_seconds is not None else 1.0
            ahead = max(1, self._admitted - self.workers + 1)
        return int(min(60, max(1, math.ceil(avg * ahead / self.workers))))

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on a worker thread; raises QueueFull when no place is left. Await the result."""
        with self._lock:
            full = self._admitted >= self.capacity
            if full:
                self._refused += 1
            else:
                self._admitted += 1
        if full:
            raise QueueFull(self.retry_after())
        try:
            job = self._executor.submit(self._timed, fn)
        except RuntimeError:  # the executor is shutting down
            with self._lock:
                self._admitted -= 1
            raise
        # Released when the job really ends: a client that disconnects while its image is being
        # translated does not stop the thread, so its place stays taken until the work is done.
        job.add_done_callback(self._release)
        return asyncio.wrap_future(job)

    def _timed(self, fn: Callable[[], T]) -> T:
        with self._lock:
            self._running += 1
        start = time.perf_counter()
        try:
            return fn()
        finally:
            seconds = time.perf_counter() - start
            with self._lock:
                self._running -= 1
                prev = self._avg_seconds
                self._avg_seconds = (seconds if prev is None
                                     else (1 - _EMA_WEIGHT) * prev + _EMA_WEIGHT * seconds)

    def _release(self, _job: Future) -> None:
        with self._lock:
            self._admitted -= 1
            self._done += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "workers": self.workers,
                "capacity": self.capacity,
                "running": self._running,
                "waiting": self._admitted - self._running,
                "completed": self._done,
                "refused": self._refused,
                "avg_seconds": round(self._avg_seconds, 4) if self._avg_seconds is not None else None,
            }

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
