"""Optimisers for the trainer: exact AdamW (the default) and an opt-in *lazy* AdamW.

``make_optimizer("adamw", ...)`` is ``torch.optim.AdamW`` with the fastest exact CPU/GPU
implementation (``fused=True``: one kernel per parameter instead of ~10 passes over memory).

``make_optimizer("lazy-adamw", ...)`` is :class:`LazyAdamW`, an **approximation** for the
GeoSURGE embedding tables, which with the in-batch loss only receive gradient on the rows of
the cells present in the batch (a few thousand of ~66K rows on MP-16-sized partitions). Exact
AdamW still moves every other row each step (its first moment decays, weight decay shrinks it),
so it has to read and write all ~51M table parameters and their two moments every step
(~1.4 GB of memory traffic). Lazy AdamW, like TensorFlow's ``LazyAdam`` and PyTorch's
``SparseAdam``, updates the moments and parameters of the touched rows only (bias correction
with the global step count); untouched rows stay as they are. Dense parameters (projection,
temperatures) get exactly the AdamW update. It is never the default and is labelled in the
benchmark output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from terraloc.errors import InputError

OPTIMIZERS = ("adamw", "lazy-adamw")


class LazyAdamW(torch.optim.Optimizer):
    """AdamW with lazy (touched-rows-only) updates for parameters whose gradient is sparse.

    Dense gradients get the exact ``torch.optim.AdamW`` update (decoupled weight decay, bias
    corrections). A sparse COO gradient of a ``(C, D)`` table updates only its non-zero rows:
    ``p_r *= 1 - lr*wd; m_r = b1 m_r + (1-b1) g_r; v_r = b2 v_r + (1-b2) g_r^2;
    p_r -= lr/(1-b1^t) * m_r / (sqrt(v_r)/sqrt(1-b2^t) + eps)`` with ``t`` the optimiser step.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                t = float(st["step"])
                bc1 = 1 - b1**t
                bc2_sqrt = math.sqrt(1 - b2**t)
                m, v = st["exp_avg"], st["exp_avg_sq"]
                g = p.grad
                if g.is_sparse:
                    g = g.coalesce()
                    rows = g.indices()[0]
                    gv = g.values()
                    pr = p.index_select(0, rows).mul_(1 - lr * wd)
                    mr = m.index_select(0, rows).mul_(b1).add_(gv, alpha=1 - b1)
                    vr = v.index_select(0, rows).mul_(b2).addcmul_(gv, gv, value=1 - b2)
                    pr.addcdiv_(mr, vr.sqrt().div_(bc2_sqrt).add_(eps), value=-lr / bc1)
                    m.index_copy_(0, rows, mr)
                    v.index_copy_(0, rows, vr)
                    p.index_copy_(0, rows, pr)
                else:
                    p.mul_(1 - lr * wd)
                    m.lerp_(g, 1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(eps), value=-lr / bc1)
        return loss


def make_optimizer(name: str, params: Sequence[Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``"adamw"`` (exact, fused) or ``"lazy-adamw"`` (touched embedding rows only; an approximation)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    if name == "lazy-adamw":
        return LazyAdamW(params, lr=lr, weight_decay=weight_decay)
    raise InputError(f"unknown optimiser '{name}' (choose {' or '.join(OPTIMIZERS)})", field="--optimizer")
