"""Bounded inference queue: blocking model calls run in worker threads, never on the event loop.

At most ``workers`` jobs run and ``queue_size`` wait; a job submitted beyond that is refused at
once with :class:`QueueFull` (the service answers 503 with ``Retry-After``), so a burst can never
pile up unbounded work or memory. A waiting job whose client went away is cancelled before it
starts.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class QueueFull(RuntimeError):
    """Every worker is busy and the waiting line is full.

    Attributes:
        retry_after: suggested wait before retrying, in whole seconds (>= 1).
    """

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"inference queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class InferenceQueue:
    """Run blocking callables in ``workers`` threads with at most ``queue_size`` waiting.

    Args:
        workers: number of inference threads (>= 1).
        queue_size: jobs allowed to wait for a thread (>= 0).
    """

    def __init__(self, workers: int = 1, queue_size: int = 8) -> None:
        if workers < 1 or queue_size < 0:
            raise ValueError("workers must be >= 1 and queue_size >= 0")
        self.workers = workers
        self.queue_size = queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="terraloc-infer")
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished (running + waiting)
        self._running = 0
        self._ewma_s = 0.5  # smoothed seconds per job, for Retry-After
        self.completed = 0
        self.rejected = 0

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished (running plus waiting)."""
        with self._lock:
            return self._pending

    def stats(self) -> dict[str, Any]:
        """Counters for ``/readyz`` and logs."""
        with self._lock:
            return {
                "workers": self.workers,
                "queue_size": self.queue_size,
                "running": self._running,
                "waiting": self._pending - self._running,
                "completed": self.completed,
                "rejected": self.rejected,
                "mean_job_ms": round(self._ewma_s * 1000.0, 1),
            }

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the time to drain the current line (1 to 60)."""
        with self._lock:
            est = self._ewma_s * (self._pending + 1) / self.workers
        return int(min(60, max(1, math.ceil(est))))

    def _done(self, fut: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    def _wrap(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._lock:
            self._running += 1
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            dt = time.perf_counter() - t0
            with self._lock:
                self._running -= 1
                self.completed += 1
                self._ewma_s = 0.8 * self._ewma_s + 0.2 * dt

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Submit ``fn(*args)``; raise :class:`QueueFull` when workers and line are all taken."""
        with self._lock:
            if self._pending >= self.workers + self.queue_size:
                self.rejected += 1
                full = True
            else:
                self._pending += 1
                full = False
        if full:
            raise QueueFull(self.retry_after())
        fut = self._executor.submit(self._wrap, fn, args)
        fut.add_done_callback(self._done)  # runs on completion *and* on cancellation
        return fut

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Await ``fn(*args)`` run in a worker thread (cancelled if still waiting when the caller is)."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def shutdown(self) -> None:
        """Cancel waiting jobs and stop the threads (running jobs finish)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
