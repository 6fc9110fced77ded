"""``terraloc bench geosurge-train``: training throughput from shards, with the arithmetic.

Measures samples/s of :func:`terraloc.train.trainer.fit` (shard reading, S2 labels,
forward, backward and optimiser; the first step excluded) at batch 1024 on the SYNTHETIC world's
training shards for

* GeoSURGE, 7 levels, on the ablation's two geometries: "mp16" (the paper's taus scaled to the
  96K training coordinates: ~67K cells, ~52M table parameters) and "coarse" (taus / 2.5: ~3.3K):
  in-batch InfoNCE with exact AdamW, in-batch with the opt-in *lazy* AdamW (an approximation:
  see :mod:`terraloc.train.optim`), and full softmax with exact AdamW;
* GeoCLIP's objective: image MLP with the frozen pretrained location encoder (the ablation's
  GeoCLIP-style head) and the full objective (location encoder trained, queue 4096).

Next to each figure it reports the matmul FLOPs of one step (``6·B·768·ΣU`` for the logits of
all levels, ``ΣU`` = candidate cells summed over levels, plus ``4·B·768·768`` for the
projection) and what a plain ``(1024×768)@(768×2048)`` matmul achieves here, i.e. the
compute-bound ceiling of the exact method on this machine.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terraloc.geo.s2partition import S2Partition
from terraloc.train.shards import ShardSet
from terraloc.train.trainer import TrainConfig, fit

BATCH = 1024


def matmul_gflops(seconds: float = 1.0) -> float:
    """Achieved GFLOP/s of a float32 ``(1024, 768) @ (768, 2048)`` matmul at the current thread count."""
    a, b = torch.randn(1024, 768), torch.randn(768, 2048)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 1024 * 768 * 2048 * n / (time.perf_counter() - t0) / 1e9


def copy_gbps(seconds: float = 1.0) -> float:
    """Achieved memory bandwidth (bytes read + written per second, GB/s) of a 256 MB copy."""
    x = torch.empty(64 * 1024 * 1024)
    y = torch.empty_like(x)
    y.copy_(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        y.copy_(x)
        n += 1
    return 2 * x.numel() * 4 * n / (time.perf_counter() - t0) / 1e9


def mean_candidates(train: ShardSet, part: S2Partition, n_batches: int = 8) -> float:
    """Mean over batches of ``ΣU``: distinct cells per level in a batch of 1024, summed over levels."""
    tot = []
    for i, b in enumerate(train.batches(BATCH, seed=0, epoch=0)):
        if i >= n_batches:
            break
        lab = part.assign(b.latlon)
        tot.append(sum(len(np.unique(lab[:, lv][lab[:, lv] >= 0])) for lv in range(lab.shape[1])))
    return float(np.mean(tot))


def _fit_rate(obj: Any, train: ShardSet, out: Path, steps: int, optimizer: str = "adamw", batch: int = BATCH) -> float:
    if out.exists():
        shutil.rmtree(out)
    cfg = TrainConfig(
        out_dir=out,
        epochs=1,
        max_steps=steps,
        batch_size=batch,
        lr=1e-3,
        progress=False,
        tensorboard=False,
        optimizer=optimizer,
    )
    return fit(obj, train, None, cfg).samples_per_s


def run_throughput(world_train: Path, work: Path, steps: int = 12, log: Any = None) -> dict[str, Any]:
    """Measure; returns the ``--json`` object (see the module docstring)."""
    from terraloc.models.geoclip import GeoClipModel
    from terraloc.train.ablation import bench_taus
    from terraloc.train.objectives import GeoClipObjective, build_geosurge_objective

    say = log or (lambda *_: None)
    train = ShardSet(world_train)
    coords = train.coords()
    gflops = matmul_gflops()
    gbps = copy_gbps()
    say(f"matmul {gflops:.1f} GFLOP/s, copy {gbps:.1f} GB/s, {torch.get_num_threads()} threads")
    parts = {
        "coarse": S2Partition.build(coords, *bench_taus("coarse")),
        "mp16": S2Partition.build(coords, *bench_taus("mp16", len(coords))),
    }
    out: dict[str, Any] = {
        "synthetic": True,
        "batch_size": BATCH,
        "torch_threads": torch.get_num_threads(),
        "matmul_gflops": round(gflops, 1),
        "copy_gb_per_s": round(gbps, 1),
        "geosurge": {},
    }
    for name, part in parts.items():
        su = mean_candidates(train, part)
        n_params = sum(part.sizes) * 768 + 768 * 768 + 768
        gflop_inbatch = (6 * BATCH * 768 * su + 4 * BATCH * 768 * 768) / 1e9
        gflop_full = (6 * BATCH * 768 * sum(part.sizes) + 4 * BATCH * 768 * 768) / 1e9
        row: dict[str, Any] = {
            "level_sizes": part.sizes,
            "parameters": n_params,
            "mean_inbatch_candidates": round(su, 1),
            "gflop_per_step_inbatch": round(gflop_inbatch, 2),
            "gflop_per_step_full": round(gflop_full, 2),
            "compute_bound_samples_per_s_inbatch": round(BATCH * gflops / gflop_inbatch),
            "compute_bound_samples_per_s_full": round(BATCH * gflops / gflop_full),
            # AdamW reads p, g, m, v and writes p, m, v: 28 bytes per parameter and step.
            "exact_adamw_bytes_per_step": 28 * n_params,
        }
        for label, mode, opt, n in (
            ("inbatch_exact_adamw", "inbatch", "adamw", steps),
            ("inbatch_lazy_adamw", "inbatch", "lazy-adamw", steps),
            ("full_softmax_exact_adamw", "full", "adamw", max(3, steps // 4) if name != "coarse" else steps),
        ):
            torch.manual_seed(0)
            obj = build_geosurge_objective(part, train.dim, mode=mode)
            rate = _fit_rate(obj, train, work / f"{name}-{label}", n, opt)
            row[label] = round(rate, 1)
            say(f"GeoSURGE {name} {label}: {rate:.0f} samples/s ({n} steps)")
        out["geosurge"][name] = row

    from terraloc.train.ablation import _pretrained_location_state
    from terraloc.train.synthetic import cached_location_features

    torch.manual_seed(0)
    gobj = GeoClipObjective(GeoClipModel(train.dim), queue_size=4096, freeze_location=True)
    gobj.model.location.load_state_dict(_pretrained_location_state())
    gobj.set_location_cache(coords, cached_location_features(coords, world_train.parent.parent))
    out["geoclip_frozen_location"] = round(_fit_rate(gobj, train, work / "geoclip-frozen", steps), 1)
    say(f"GeoCLIP frozen location encoder: {out['geoclip_frozen_location']:.0f} samples/s")
    torch.manual_seed(0)
    full = GeoClipObjective(GeoClipModel(train.dim), queue_size=4096, freeze_location=False)
    full._enqueue(torch.from_numpy(coords[:4096].astype(np.float32)))  # a full queue of real coordinates
    out["geoclip_full_objective"] = round(_fit_rate(full, train, work / "geoclip-full", 3), 1)
    say(f"GeoCLIP full objective (location encoder trained, queue 4096): {out['geoclip_full_objective']:.0f} samples/s")
    return out
