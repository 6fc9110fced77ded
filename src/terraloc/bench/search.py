"""Gallery-search benchmark: comparisons, latency, build time, memory and accuracy per backend.

Queries are the GeoCLIP location embeddings of the 2,997 Im2GPS3k ground-truth locations, clean
and with Gaussian noise (``sigma`` per dimension) added before re-normalising; accuracy is that of
the top-1 gallery point's coordinates against the ground truth (1/25/200/750/2500 km).

Galleries: 100,000 is GeoCLIP's MP-16 gallery (:func:`default_gallery`); smaller sizes are seeded
random subsets of it; larger ones are the 100K points followed by points sampled from them with
~5 km Gaussian jitter, embedded once with the real encoder and cached as float16 under
``home_dir()/galleries/`` (each size reuses the embeddings of the next smaller cached size).

Run ``terraloc bench search --help`` (this module is the library; the command is in ``terraloc.cli``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError

DEFAULT_SIZES = (100_000, 1_000_000, 5_000_000)
DEFAULT_NOISE = (0.0, 0.1, 0.2, 0.25)
DEFAULT_BACKENDS = ("flat", "hierarchical", "hierarchical@top=800,beam=8,leaf_beam=6", "HNSW32", "IVF1024,Flat")
BASE_SIZE = 100_000
JITTER_KM = 5.0
BLOCK = 100_000
_PREFIXES = ("IVF", "OPQ", "PCA", "IMI", "IDMap", "Pad", "RR", "L2norm")

Log = Callable[[str], None]


@dataclass
class Backend:
    """One backend to benchmark: a spec for :func:`make_index` plus options."""

    name: str
    options: dict[str, Any]


def parse_backends(text: str) -> list[Backend]:
    """Parse ``--backends``: names separated by ``;`` (or ``,`` where unambiguous).

    FAISS factory strings contain commas (``IVF1024,Flat``); with ``,`` as separator a component
    following a prefix component (``IVF..``, ``OPQ..``, ``PCA..``) is joined back to it. Search
    parameters follow ``@``: ``IVF4096,PQ64@nprobe=32``; hierarchical options as
    ``hierarchical@beam=8,leaf_beam=6,top=800,routing=learned``.
    """
    from terraloc.search.spec import parse_index_spec

    parts = [p.strip() for p in (text.split(";") if ";" in text else _join_factory(text.split(",")))]
    out = [Backend(*parse_index_spec(part, field="--backends")) for part in parts if part]
    if not out:
        raise InputError("no backends given", field="--backends")
    return out


def _join_factory(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for tok in tokens:
        tok = tok.strip()
        if out and out[-1].split("@")[0].split(",")[-1].startswith(_PREFIXES) and "@" not in out[-1]:
            out[-1] = f"{out[-1]},{tok}"
        else:
            out.append(tok)
    return out


def parse_list(text: str, field: str, cast: Callable[[str], Any]) -> list[Any]:
    """Parse a comma-separated list of numbers (``1e6`` and ``1_000_000`` accepted for sizes)."""
    try:
        values = [cast(t.strip().replace("_", "")) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"'{text}' is not a comma-separated list of numbers", field=field) from None
    if not values:
        raise InputError("empty list", field=field)
    return values


def _size(text: str) -> int:
    value = float(text)
    if value != int(value) or value < 1:
        raise ValueError(text)
    return int(value)


def jittered_coords(base: NDArray[np.float64], size: int, *, jitter_km: float = JITTER_KM) -> NDArray[np.float64]:
    """``(size, 2)`` coordinates: ``base`` itself, then points sampled from it with Gaussian jitter.

    Deterministic and prefix-stable: the first ``m`` rows of a larger size equal those of size ``m``
    (rows are generated in blocks of 100,000, each from its own seed).
    """
    from terraloc.geo.coords import normalize_lon

    if size <= len(base):
        return base[:size].copy()
    blocks = [base]
    for j, start in enumerate(range(len(base), size, BLOCK)):
        m = min(BLOCK, size - start)
        rng = np.random.default_rng([2024, j])  # whole blocks are drawn, then cut: prefix-stable
        pick = base[rng.integers(0, len(base), BLOCK)][:m]
        d = rng.normal(scale=jitter_km, size=(BLOCK, 2))[:m] / 111.195  # km -> degrees of latitude
        lat = np.clip(pick[:, 0] + d[:, 0], -90.0, 90.0)
        coslat = np.maximum(np.cos(np.radians(pick[:, 0])), 0.05)
        lon = normalize_lon(pick[:, 1] + d[:, 1] / coslat)
        blocks.append(np.stack([lat, lon], axis=1))
    return np.concatenate(blocks)


def bench_gallery(
    size: int, encoder: Any, log: Log, progress: Callable[[int, int], None] | None = None
) -> tuple[NDArray[np.float64], np.ndarray, str]:
    """Coordinates ``(N, 2)``, embeddings ``(N, D)`` and a description of the gallery of ``size`` points.

    ``progress(done, total)`` reports the embedding of a gallery built for the first time.
    """
    from terraloc.search.gallery import MANIFEST, Gallery, build_gallery, default_gallery, galleries_dir

    if size < BASE_SIZE:
        # A seeded random subset of GeoCLIP's gallery, embedded directly (tests need no 100K build).
        import torch

        from terraloc.search.gallery import geoclip_gallery_coords

        all_coords = geoclip_gallery_coords()
        rows = np.sort(np.random.default_rng(size).choice(len(all_coords), size, replace=False))
        emb = encoder.encode(torch.from_numpy(all_coords[rows].astype(np.float32))).numpy()
        return all_coords[rows], emb, f"random {size:,} of GeoCLIP's 100K gallery"
    base = default_gallery(encoder)
    if size == len(base):
        return base.coords, base.embeddings, str(base.path)
    out = galleries_dir() / f"bench-{size}-{encoder.encoder_id}-{encoder.weights_hash}-float16"
    if (out / MANIFEST).exists():
        g = Gallery.load(out, encoder)
        return g.coords, g.embeddings, str(g.path)
    # Reuse the largest smaller cached gallery's embeddings as this one's first rows.
    prefix: np.ndarray = base.embeddings
    for cand in sorted(galleries_dir().glob(f"bench-*-{encoder.encoder_id}-{encoder.weights_hash}-float16")):
        m = int(cand.name.split("-")[1])
        if m < size and m > len(prefix) and (cand / MANIFEST).exists():
            prefix = Gallery.load(cand, encoder).embeddings
    coords = jittered_coords(base.coords, size)
    log(f"building the {size:,}-point gallery at {out} ({size - len(prefix):,} points to embed)")
    g = build_gallery(
        coords,
        encoder,
        out,
        dtype="float16",
        prefix_embeddings=prefix,
        reuse_existing=True,
        overwrite=True,
        progress=progress,
        extra={"source": f"geoclip-100k + jitter {JITTER_KM} km", "jitter_km": JITTER_KM},
    )
    return g.coords, g.embeddings, str(g.path)


def make_queries(encoder: Any, n_queries: int | None) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    """Im2GPS3k ground truth ``(Q, 2)`` and its clean normalised location embeddings ``(Q, D)``."""
    import torch

    from terraloc.evaluate import load_benchmark

    gt = load_benchmark("im2gps3k")
    coords = gt.coords if n_queries is None else gt.coords[:n_queries]
    emb = encoder.encode(torch.from_numpy(coords.astype(np.float32))).numpy()
    return coords, emb


def add_noise(emb: NDArray[np.float32], sigma: float, seed: int = 0) -> NDArray[np.float32]:
    """``emb + sigma * N(0, 1)`` per dimension, re-normalised (seeded per sigma)."""
    if sigma == 0:
        return emb
    rng = np.random.default_rng([seed, round(sigma * 1e6)])
    x = emb + sigma * rng.standard_normal(emb.shape, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def run_benchmark(
    sizes: Sequence[int] = DEFAULT_SIZES,
    noise: Sequence[float] = DEFAULT_NOISE,
    backends: Sequence[Backend] | None = None,
    *,
    n_queries: int | None = None,
    n_single: int = 100,
    log: Log = lambda _msg: None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every (size, backend, noise) combination; returns the ``runs`` list of the JSON output.

    ``progress(done, total)`` reports the embedding of galleries built for the first time.
    """
    from terraloc.encoders import load_location_encoder
    from terraloc.evaluate.metrics import accuracy_table
    from terraloc.geo.distance import haversine_km
    from terraloc.search.index import make_index

    backends = list(backends) if backends is not None else parse_backends(";".join(DEFAULT_BACKENDS))
    for s in noise:
        if not (0 <= s < 10):
            raise InputError(f"noise {s} must be in [0, 10)", field="--noise")
    encoder = load_location_encoder("geoclip")
    gt, clean = make_queries(encoder, n_queries)
    queries = {s: add_noise(clean, s) for s in noise}
    runs: list[dict[str, Any]] = []
    for size in sizes:
        if size < 1:
            raise InputError(f"gallery size {size} must be positive", field="--sizes")
        coords, emb, desc = bench_gallery(size, encoder, log, progress)
        log(f"gallery {size:,}: {desc}")
        for be in backends:
            opts = dict(be.options)
            if be.name == "hierarchical" and size < 100 * opts.get("top", 200):
                opts["top"] = max(2, size // 100)  # tiny test galleries
            t0 = time.perf_counter()
            index = make_index(be.name, emb, **opts)
            build_s = time.perf_counter() - t0
            extra = index.describe() if hasattr(index, "describe") else {}
            log(f"  {be.name}: built in {build_s:.1f} s")
            for s in noise:
                q = queries[s]
                t0 = time.perf_counter()
                res = index.search(q, 1)
                batched = time.perf_counter() - t0
                single_q = q[: max(1, min(n_single, len(q)))]
                t0 = time.perf_counter()
                for row in single_q:
                    index.search(row[None, :], 1)
                single = time.perf_counter() - t0
                dist = haversine_km(gt, coords[res.indices[:, 0]])
                acc = accuracy_table(dist)
                run = {
                    "gallery_size": int(size),
                    "backend": be.name,
                    "noise": float(s),
                    "comparisons_per_query": round(float(res.comparisons_per_query), 1),
                    "ms_per_query_batched": round(1e3 * batched / len(q), 4),
                    "ms_per_query_single": round(1e3 * single / len(single_q), 4),
                    "build_s": round(build_s, 2),
                    "memory_mb": round(index.memory_bytes / 2**20, 1),
                    "accuracy": {k: round(v, 1) for k, v in acc.items()},
                    "queries": len(q),
                    "options": {k: v for k, v in opts.items()},
                }
                if extra:
                    run["tree"] = {k: extra[k] for k in ("level_sizes", "leaf_rows_mean", "leaf_rows_max")}
                runs.append(run)
                log(
                    f"    noise {s}: {run['comparisons_per_query']:.0f} cmp/q, "
                    f"{run['ms_per_query_batched']:.3f} ms/q batched, acc {run['accuracy']}"
                )
            del index
    return runs


def to_json(runs: list[dict[str, Any]]) -> str:
    """The ``--json`` object: ``{"runs": [...]}``."""
    return json.dumps({"runs": runs})
