"""The local engine: one worker in this process, partitions in order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from terraloc.engine.workers import BatchCallback, PartCallback, PartInput, WorkerSpec, run_partition


@dataclass
class LocalEngine:
    """Run every partition in this process with one model.

    Attributes:
        workers: compute threads for the model (``torch.set_num_threads``); decoding threads are
            the worker spec's.
        device: ``auto`` (a GPU when this process sees one), ``cpu`` or ``cuda``.
    """

    workers: int = 1
    device: str = "auto"
    name: str = "local"
    startup_s: float = 0.0  # seconds the last run spent loading the model

    def run(
        self, spec: WorkerSpec, out: str, parts: Iterable[PartInput], on_part: PartCallback, on_batch: BatchCallback
    ) -> None:
        import time

        import torch

        old = torch.get_num_threads()
        t0 = time.perf_counter()
        try:
            worker = spec.build(self.workers, self.device)
            self.startup_s = time.perf_counter() - t0
            for p in parts:
                on_part(run_partition(worker, out, p, on_batch))
        finally:
            torch.set_num_threads(old)
