"""``--engine local|ray`` → an engine object."""

from __future__ import annotations

from terraloc.engine.job import Engine
from terraloc.errors import InputError

ENGINE_NAMES = ("local", "ray")


def make_engine(
    name: str,
    *,
    workers: int = 1,
    threads: int = 1,
    ray_address: str | None = None,
    gpus: float | None = None,
    device: str = "auto",
) -> Engine:
    """The engine called ``name``.

    Args:
        workers: Ray actors (``ray``), or compute threads of the one process (``local``).
        threads: CPUs / torch threads per Ray actor (``ray`` only).
        ray_address: cluster to join (else ``RAY_ADDRESS``, else a local cluster is started).
        gpus: GPUs per Ray actor (``None``: automatic).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the local engine (checked here); for
            ``ray``, ``cpu`` asks for no GPUs when ``gpus`` is not given (actors use what Ray gives them).
    """
    from terraloc.device import resolve_device

    if workers < 1:
        raise InputError(f"must be at least 1, got {workers}", field="workers")
    if threads < 1:
        raise InputError(f"must be at least 1, got {threads}", field="threads")
    if name == "local":
        if ray_address:
            raise InputError("--ray-address needs --engine ray", field="ray-address")
        from terraloc.engine.local import LocalEngine

        return LocalEngine(workers=workers, device=resolve_device(device))
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InputError("--engine ray needs Ray: pip install 'terraloc[ray]'", field="engine") from None
        from terraloc.engine.ray_engine import RayEngine

        if gpus is None and resolve_device(device, here=False) == "cpu":
            gpus = 0.0
        return RayEngine(workers=workers, threads=threads, gpus=gpus, address=ray_address)
    raise InputError(f"unknown engine '{name}'; choose {' or '.join(ENGINE_NAMES)}", field="engine")
