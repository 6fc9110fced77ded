"""The Ray engine: a pool of actors, each holding the model once, writing part files itself.

The driver only hands out partitions (ids and paths of a few hundred photos) and receives a few
numbers per partition; rows never travel back to it. Actors are created with ``max_restarts`` and
``max_task_retries``: when one dies (a crash, an out-of-memory kill, a lost node) Ray restarts it
and runs its unfinished partitions again; part files are keyed by partition id and written
atomically, so a retried partition neither loses nor duplicates rows.

Connecting: ``address`` (``--ray-address``) or ``RAY_ADDRESS`` joins a running cluster (``ray start
--head`` on one machine, ``ray start --address=HEAD:PORT`` on the others); with neither, a local
cluster is started with ``workers × threads`` CPUs and stopped when the process exits.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from terraloc.engine.workers import BatchCallback, PartCallback, PartInput, Worker, WorkerSpec, run_partition
from terraloc.errors import InputError, TerralocError

#: Environment variables forwarded from the driver to every actor (paths to shared data and caches).
FORWARD_PREFIX = "TERRALOC_"


class PartActor:
    """Ray actor: builds the worker once (``spec.build``), then processes partitions."""

    def __init__(self, spec: WorkerSpec, threads: int, device: str, env: dict[str, str] | None = None) -> None:
        # the driver's TERRALOC_* settings, set here rather than as a Ray runtime_env: an actor
        # without one can start in one of the worker processes Ray keeps ready (faster start-up)
        os.environ.update(env or {})
        self.worker: Worker | None = None
        self.error: tuple[bool, str] | None = None
        try:
            self.worker = spec.build(threads, device)
        except Exception as exc:  # reported by ready(); a user error keeps its one-line message
            self.error = (isinstance(exc, TerralocError), f"{type(exc).__name__}: {exc}")

    def ready(self) -> tuple[bool, str] | None:
        """``None`` when the model is loaded, else ``(is_user_error, message)``."""
        return self.error

    def run(self, out: str, part: PartInput) -> dict[str, Any]:
        assert self.worker is not None
        return run_partition(self.worker, out, part)


def connect(address: str | None, num_cpus: int) -> dict[str, float]:
    """Join the cluster at ``address`` / ``RAY_ADDRESS``, or start a local one; returns its resources."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(
                    num_cpus=max(1, num_cpus),
                    include_dashboard=False,
                    object_store_memory=256 * 2**20,
                    **kw,
                )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot connect to the Ray cluster at '{address}': {exc}", field="ray-address") from None
        atexit.register(ray.shutdown)
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _unwrap(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, TerralocError) else exc


@dataclass
class RayEngine:
    """Run partitions on a pool of Ray actors.

    Attributes:
        workers: actors in the pool.
        threads: CPUs reserved per actor (its ``torch`` threads).
        gpus: GPUs per actor; ``None`` = 1 when the cluster has a GPU per actor, a share of them
            when it has fewer, 0 without GPUs. An actor with a GPU runs its model on ``cuda``.
        address: cluster to join (else ``RAY_ADDRESS``, else a local cluster is started).
        max_restarts: times Ray restarts a dead actor (and retries its partitions).
        inflight: partitions queued per actor (2: the next one is ready when one finishes).
    """

    workers: int = 2
    threads: int = 1
    gpus: float | None = None
    address: str | None = None
    max_restarts: int = 3
    inflight: int = 2
    name: str = "ray"
    startup_s: float = 0.0  # seconds the last run spent starting actors and loading the model in them

    def run(
        self, spec: WorkerSpec, out: str, parts: Iterable[PartInput], on_part: PartCallback, on_batch: BatchCallback
    ) -> None:
        import time

        import ray

        t0 = time.perf_counter()
        if self.workers < 1 or self.threads < 1:
            raise InputError("--workers and --threads must be at least 1", field="workers")
        res = connect(self.address, self.workers * self.threads)
        need = self.workers * self.threads
        if res.get("CPU", 0) < need:
            raise InputError(
                f"the Ray cluster has {res.get('CPU', 0):g} CPUs; {self.workers} worker(s) x {self.threads} "
                f"thread(s) need {need}",
                field="workers",
            )
        total_gpus = res.get("GPU", 0.0)
        gpus = self.gpus if self.gpus is not None else (min(1.0, total_gpus / self.workers) if total_gpus else 0.0)
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_PREFIX)}
        actor_cls: Any = ray.remote(PartActor)
        actor_cls = actor_cls.options(
            num_cpus=self.threads,
            num_gpus=gpus,
            max_restarts=self.max_restarts,
            max_task_retries=self.max_restarts,
        )
        device = "cuda" if gpus > 0 else "cpu"
        actors: list[Any] = [actor_cls.remote(spec, self.threads, device, env) for _ in range(self.workers)]
        try:
            for err in ray.get([a.ready.remote() for a in actors]):
                if err is not None:
                    user, msg = err
                    if user:
                        raise InputError(msg.split(": ", 1)[1] if ": " in msg else msg)
                    raise RuntimeError(f"a Ray worker could not load the model: {msg}")
            self.startup_s = time.perf_counter() - t0
            self._pump(actors, out, parts, on_part, on_batch)
        finally:
            for a in actors:
                ray.kill(a)

    def _pump(
        self,
        actors: list[Any],
        out: str,
        parts: Iterable[PartInput],
        on_part: PartCallback,
        on_batch: BatchCallback,
    ) -> None:
        import ray

        load = [0] * len(actors)
        pending: dict[Any, int] = {}

        def collect(block: bool) -> None:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
            for ref in done:
                a = pending.pop(ref)
                load[a] -= 1
                try:
                    stats = ray.get(ref)
                except Exception as exc:
                    raise _unwrap(exc) from None
                on_batch(int(stats["photos"]))
                on_part(stats)

        for p in parts:
            while len(pending) >= self.inflight * len(actors):
                collect(block=True)
            a = min(range(len(actors)), key=load.__getitem__)
            pending[actors[a].run.remote(out, p)] = a
            load[a] += 1
        while pending:
            collect(block=True)
