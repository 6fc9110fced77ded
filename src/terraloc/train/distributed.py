"""Distributed data-parallel set-up for runs launched by ``torchrun``.

``torchrun --nproc_per_node N -m terraloc train ...`` sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``;
:func:`init` then joins the process group (gloo on CPU, NCCL when CUDA is available) and
:func:`shutdown` waits at a barrier before ``destroy_process_group`` (without the barrier,
ranks that finish first tear down gloo while others still talk to it and runs crash at exit).
Every rank reads the same global batch and takes its contiguous slice, so the gradient that
DDP averages equals the single-process gradient of the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init() -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size())


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Barrier, then destroy the process group."""
    if info.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_slice(n: int, info: DistInfo) -> slice:
    """This rank's contiguous slice of a global batch of ``n`` rows (``n`` divisible by world)."""
    if n % info.world_size:
        raise ValueError(f"global batch {n} is not divisible by world size {info.world_size}")
    b = n // info.world_size
    return slice(info.rank * b, (info.rank + 1) * b)
