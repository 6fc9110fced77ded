"""Progress events and the run summary: the library reports, front ends draw.

The engine calls ``on_progress(Progress)`` after every finished batch (local engine) or partition
(Ray engine); the CLI draws a bar from it. Rates count the photos processed in this run only
(photos skipped because a previous run finished them are not counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Progress:
    """Where a run stands.

    Attributes:
        total: photos in the job.
        done: photos finished (processed in this run, or in finished parts of an earlier run).
        skipped: photos in parts an earlier run had finished (counted in ``done``).
        failed: photos that failed in this run's finished parts (counted in ``done``).
        elapsed_s: seconds since the run started.
        photos_per_s: photos processed in this run per second (0 before the first finishes).
        eta_s: seconds left at that rate (``None`` while unknown).
    """

    total: int
    done: int
    skipped: int
    failed: int
    elapsed_s: float
    photos_per_s: float
    eta_s: float | None


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Counts photos and turns them into :class:`Progress` events."""

    def __init__(self, total: int, skipped: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.skipped = skipped
        self.processed = 0
        self.failed = 0
        self.callback = callback
        self.t0 = time.perf_counter()

    def add(self, photos: int, failed: int = 0) -> None:
        self.processed += photos
        self.failed += failed
        if self.callback is not None:
            self.callback(self.snapshot())

    def snapshot(self) -> Progress:
        el = time.perf_counter() - self.t0
        rate = self.processed / el if el > 0 and self.processed else 0.0
        left = self.total - self.skipped - self.processed
        eta = left / rate if rate > 0 else None
        return Progress(self.total, self.skipped + self.processed, self.skipped, self.failed, el, rate, eta)


@dataclass
class RunSummary:
    """What a finished run did.

    Attributes:
        out: the job folder.
        engine: ``local`` or ``ray``; workers: processes/actors used.
        total: photos in the job; done: processed in this run without error;
        skipped: photos in parts an earlier run had finished; failed: photos that failed (all
            parts, including skipped ones) plus inputs that named no usable photo (missing files,
            unsupported formats); ignored: files in scanned folders that are not photos (listed in
            ``errors.csv``, not failures); rows: output rows in all parts.
        parts: partitions in the job; parts_written: partitions written by this run.
        seconds: wall time of this run; photos_per_s: photos processed in this run per second.
        startup_s: of ``seconds``, the time spent starting workers and loading the model (and, for
            a Ray run that started its own cluster, starting it); steady_photos_per_s: photos per
            second after that (what more photos would run at).
        driver_peak_rss_mb: peak resident memory of the driver process (MiB).
    """

    out: str
    engine: str
    workers: int
    total: int
    done: int
    skipped: int
    failed: int
    ignored: int
    rows: int
    parts: int
    parts_written: int
    seconds: float
    photos_per_s: float
    driver_peak_rss_mb: float
    startup_s: float = 0.0
    steady_photos_per_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status`` (the high-water mark of this program's memory;
    ``ru_maxrss`` is not used there because it keeps the parent's peak across ``fork`` + ``exec``).
    Elsewhere: ``ru_maxrss``.
    """
    import resource
    import sys

    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0
