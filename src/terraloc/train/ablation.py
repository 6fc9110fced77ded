"""``terraloc bench geosurge``: hierarchy-depth ablation and GeoSURGE vs a GeoCLIP-style head.

Runs on the SYNTHETIC world (:mod:`terraloc.train.synthetic`): real MP-16 coordinates, synthetic
"visual" embeddings. For 1, 3, 5 and 7 levels (always the finest ``k`` of the seven partitions,
so every variant predicts at the same leaf resolution) a GeoSURGE head is trained on identical
shards and scored on the held-out synthetic test split with ``terraloc eval``'s metrics; a
GeoCLIP-style head (GeoCLIP's image MLP + frozen pretrained location encoder, queue of recent
training GPS, gallery = training coordinates) is trained on the same shards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terraloc.errors import InputError
from terraloc.evaluate.benchmarks import GroundTruth
from terraloc.evaluate.metrics import evaluate
from terraloc.evaluate.predictions import Predictions
from terraloc.geo.distance import haversine_km
from terraloc.geo.s2partition import GEOSURGE_TAU_MAX, GEOSURGE_TAU_MIN, S2Partition, scale_taus
from terraloc.models.geoclip import GeoClipModel
from terraloc.models.geosurge import GeoSurgeHead, Refiner
from terraloc.train.objectives import GeoClipObjective, build_geosurge_objective
from terraloc.train.shards import ShardSet
from terraloc.train.synthetic import World, WorldSpec, build_world
from terraloc.train.trainer import ProgressFn, TrainConfig, fit

#: Partition geometries. "mp16" (the default): the paper's thresholds scaled to the training
#: sample (``scale_taus``: tau * n / 4.72M, tau_min 1), i.e. the same cells as the MP-16
#: partitions (~23.5K finest cells on the 96K synthetic training coordinates, ~4 images each).
#: "coarse": the thresholds divided by 2.5 (tau_min 20): ~1.1K finest cells of ~84 images, the
#: bench's geometry until the training loop became fast enough for the MP-16 one.
GEOMETRIES = ("mp16", "coarse")
BENCH_DIVISOR = 2.5
QUICK_EPOCHS = 2


def bench_taus(geometry: str = "coarse", n_train: int = 0) -> tuple[tuple[int, ...], int]:
    """``(tau_max, tau_min)`` of a bench geometry (``n_train`` training coordinates for "mp16")."""
    if geometry == "mp16":
        return scale_taus(n_train)
    if geometry == "coarse":
        return tuple(int(t / BENCH_DIVISOR) for t in GEOSURGE_TAU_MAX), int(GEOSURGE_TAU_MIN / BENCH_DIVISOR)
    raise InputError(f"unknown geometry '{geometry}' ({' or '.join(GEOMETRIES)})", field="--geometry")


def _read_all(s: ShardSet) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids, ll, emb = [], [], []
    for i in range(len(s.shards)):
        b = s.read_shard(i)
        ids.extend(b.ids.tolist())
        ll.append(b.latlon)
        emb.append(b.emb)
    return ids, np.concatenate(ll), np.concatenate(emb)


def paired_difference(
    dist_a: np.ndarray, dist_b: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Accuracy of ``a`` minus ``b`` (percentage points) per threshold, with a 95% paired bootstrap.

    Both are ``(N,)`` distances (km) on the same test images; resampling images (not heads)
    keeps the pairing, so the interval is much tighter than comparing two separate intervals.
    """
    from terraloc.evaluate.metrics import THRESHOLDS_KM

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(dist_a), size=(n_boot, len(dist_a)))
    out = {}
    for t in THRESHOLDS_KM:
        d = (dist_a <= t).astype(np.float64) - (dist_b <= t)
        boots = 100 * d[idx].mean(1)
        out[str(t)] = {
            "diff": round(100 * float(d.mean()), 2),
            "ci95": [round(float(np.percentile(boots, 2.5)), 2), round(float(np.percentile(boots, 97.5)), 2)],
        }
    return out


def _score(name: str, ids: list[str], truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    gt = GroundTruth(name=name, ids=ids, coords=truth, path=Path(name))
    res = evaluate(gt, Predictions(ids, pred, Path(name), "terraloc"), n_boot=200)
    return res.to_json()


def run_bench(
    quick: bool = False,
    root: Path | None = None,
    progress: ProgressFn | None = None,
    log: Any = None,
    geometry: str = "mp16",
    build_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the ablation; returns the ``--json`` object (all accuracies on SYNTHETIC data).

    ``progress`` is handed to every :func:`~terraloc.train.trainer.fit` of the heads compared;
    ``build_progress(done, total)`` reports the synthetic world's first build.
    """
    from terraloc.config import home_dir

    torch.set_num_threads(max(1, torch.get_num_threads()))
    say = log or (lambda *_: None)
    root = root or home_dir() / "synthetic"
    t_start = time.perf_counter()
    world: World = build_world(root, WorldSpec(), progress=build_progress)
    train, val, test = ShardSet(world.train), ShardSet(world.val), ShardSet(world.test)
    test_ids, test_ll, test_emb = _read_all(test)
    train_coords = train.coords()
    tau_max, tau_min = bench_taus(geometry, len(train_coords))
    full = S2Partition.build(train_coords, tau_max, tau_min, source="synthetic train split")
    say(f"partition sizes {full.sizes}")
    # --quick: 2 epochs of batch 1024 per head; full: up to 6 epochs (early stopping).
    # (Until the training loop was made ~10x faster, --quick was 24 steps, a quarter of an epoch:
    # fine cells had been seen ~20 times each, which measured learning speed, not the method.)
    epochs, max_steps = (QUICK_EPOCHS, 0) if quick else (6, 0)
    out_root = root / "bench-runs" / (("quick" if quick else "full") + f"-{geometry}")
    import shutil

    if out_root.exists():
        shutil.rmtree(out_root)
    _, ref_ll, ref_emb = _read_all(train)
    levels_out: dict[str, Any] = {}
    levels_out_plain: dict[str, Any] = {}
    throughput = 0.0
    dists: dict[int, np.ndarray] = {}
    leaf_acc: dict[str, float] = {}
    finest_only_json: dict[str, Any] = {}
    true_leaf = full.assign(test_ll)[:, -1]
    infer_ms = 0.0
    infer_ms_refined = 0.0
    n_levels = full.n_levels
    for k in (1, 3, 5, 7):
        part = full.select_levels(range(n_levels - k, n_levels))
        torch.manual_seed(0)
        obj = build_geosurge_objective(part, train.dim, mode="inbatch")
        cfg = TrainConfig(
            out_dir=out_root / f"levels-{k}",
            epochs=epochs,
            max_steps=max_steps,
            lr=1e-3,
            progress=progress is not None,
            tensorboard=False,
            seed=0,
        )
        res = fit(obj, train, val, cfg, progress=progress)
        say(f"{k} level(s): {res.steps} steps, {res.samples_per_s:.0f} samples/s, history {res.history}")
        head = GeoSurgeHead(obj.model, part, Refiner(part, ref_ll, ref_emb))
        t0 = time.perf_counter()
        plain, _ = head.predict(test_emb, top_k=1, refine=False)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        refined, _ = head.predict(test_emb, top_k=1, refine=True)
        t_ref = time.perf_counter() - t0
        levels_out[str(k)] = _score(f"synthetic-test-{k}-levels", test_ids, test_ll, refined[:, 0])
        levels_out_plain[str(k)] = _score(f"synthetic-test-{k}-levels-centre", test_ids, test_ll, plain[:, 0])
        dists[k] = haversine_km(refined[:, 0], test_ll)
        top_leaf = head.leaf_log_scores(torch.from_numpy(test_emb)).argmax(-1).numpy()
        leaf_acc[str(k)] = round(100 * float(np.mean(top_leaf == true_leaf)), 2)
        if k == n_levels and k > 1:
            # Diagnostic: the same 7-level model scored with its finest level alone (separates what
            # multi-level *training* does to the leaf table from what the *sum of levels* does).
            only_leaf = head.leaf_log_scores(torch.from_numpy(test_emb), [k - 1]).argmax(-1).numpy()
            leaf_acc[f"{k}_finest_level_only"] = round(100 * float(np.mean(only_leaf == true_leaf)), 2)
            ll_only = head.refiner.refine(test_emb, only_leaf, part.centers[-1][only_leaf])  # type: ignore[union-attr]
            finest_only_json = _score(f"synthetic-test-{k}-levels-finest-only", test_ids, test_ll, ll_only)
        if k == 7:
            throughput = res.samples_per_s
            infer_ms = 1000 * t_plain / len(test_ids)
            infer_ms_refined = 1000 * t_ref / len(test_ids)
    # Untrained 1-level baseline (for the "learns" check).
    part1 = full.select_levels([n_levels - 1])
    torch.manual_seed(0)
    untrained = build_geosurge_objective(part1, train.dim)
    un, _ = GeoSurgeHead(untrained.model, part1).predict(test_emb, top_k=1, refine=False)
    untrained_json = _score("synthetic-test-untrained", test_ids, test_ll, un[:, 0])

    # GeoCLIP-style head on the same shards.
    torch.manual_seed(0)
    gobj = GeoClipObjective(GeoClipModel(train.dim, pretrained=False), queue_size=4096, freeze_location=True)
    gobj.model.location.load_state_dict(_pretrained_location_state())
    gobj.set_gallery(ref_ll)
    from terraloc.train.synthetic import cached_location_features

    gobj.set_location_cache(ref_ll, cached_location_features(ref_ll, root))
    gcfg = TrainConfig(
        out_dir=out_root / "geoclip",
        epochs=epochs,
        max_steps=max_steps,
        lr=1e-3,
        progress=progress is not None,
        tensorboard=False,
    )
    gres = fit(gobj, train, val, gcfg, progress=progress)
    gobj._gallery = torch.from_numpy(cached_location_features(ref_ll, root))
    gpred = gobj.predict(test_emb)
    geoclip_json = _score("synthetic-test-geoclip-head", test_ids, test_ll, gpred)

    # Throughput of the full GeoCLIP objective (location encoder trained). Its cost per image is
    # set by (batch + queue) / batch = 5 location encodings per image; measured at 1/8 scale
    # (batch 128, queue 512 pre-filled with real training coordinates) to keep the bench short.
    torch.manual_seed(0)
    full_obj = GeoClipObjective(GeoClipModel(train.dim), queue_size=512, freeze_location=False)
    full_obj._enqueue(torch.from_numpy(ref_ll[:512].astype(np.float32)))
    fcfg = TrainConfig(
        out_dir=out_root / "geoclip-full", epochs=1, batch_size=128, max_steps=2, progress=False, tensorboard=False
    )
    fres = fit(full_obj, train, None, fcfg)
    # Full-softmax GeoSURGE throughput (7 levels).
    torch.manual_seed(0)
    fs = build_geosurge_objective(full, train.dim, mode="full")
    fscfg = TrainConfig(out_dir=out_root / "full-softmax", epochs=1, max_steps=4, progress=False, tensorboard=False)
    fsres = fit(fs, train, None, fscfg)
    return {
        "synthetic": True,
        "world": world.spec.key(),
        "geometry": geometry,
        "partition_sizes": full.sizes,
        "tau_max": list(tau_max),
        "tau_min": tau_min,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": 1024,
        "levels": levels_out,
        "levels_cell_centre": levels_out_plain,
        "leaf_accuracy": leaf_acc,
        "levels_7_finest_level_only": finest_only_json,
        "diff_7_minus_1_levels": paired_difference(dists[n_levels], dists[1]),
        "untrained_1_level": untrained_json,
        "geoclip_head": geoclip_json,
        "train_samples_per_s": round(throughput, 1),
        "train_samples_per_s_full_softmax": round(fsres.samples_per_s, 1),
        "geoclip_train_samples_per_s": round(gres.samples_per_s, 1),
        "geoclip_full_objective_train_samples_per_s": round(fres.samples_per_s, 1),
        "inference_ms_per_image": round(infer_ms, 3),
        "inference_ms_per_image_refined": round(infer_ms_refined, 3),
        "torch_threads": torch.get_num_threads(),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }


def _pretrained_location_state() -> dict[str, Any]:
    from terraloc.encoders.geoclip_assets import geoclip_asset

    return torch.load(geoclip_asset("location_encoder"), map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
