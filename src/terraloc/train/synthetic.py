"""A SYNTHETIC training world for CPU experiments (not real image embeddings).

Real MP-16 images and their CLIP embeddings are not available here, so this builds a stand-in
whose *coordinates are real* (GeoCLIP's 100K MP-16 GPS gallery) and whose "visual" embeddings are
synthetic: a fixed, seeded, non-linear function of the real GeoCLIP location encoder's output
plus Gaussian noise::

    z   = normalise(locenc(p))                       # (512,) real location features
    z'  = (1 - m) z + m normalise(locenc(R_k p))     # only inside confusable region B_k
    x   = normalise(W2 · tanh(3 · W1 · z') + sigma · n) # (768,) "visual" embedding, n ~ N(0, I/768)

``R_k`` is the rotation of the sphere taking the centre of region ``B_k`` to the centre of a far
region ``A_k``: photos from ``B_k`` partly look like photos from ``A_k`` (confusable regions, as
Scandinavian forests look Canadian). The noise level (2.0) is chosen so that trained heads land
in the accuracy range of real models (roughly 30-40% at 25 km, ~90% at 2500 km); with little
noise the task is nearly solved by any head and the hierarchy has nothing to add. Everything
this module writes is labelled synthetic (``"synthetic": true`` in the shard manifests).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from terraloc.geo.distance import haversine_km
from terraloc.geo.sphere import from_unit_vectors, to_unit_vectors
from terraloc.io import atomic_write_text
from terraloc.train.shards import write_shards

WORLD_VERSION = 1


@dataclass(frozen=True)
class WorldSpec:
    """Parameters of the synthetic world (all fixed and seeded)."""

    seed: int = 0
    dim: int = 768
    hidden: int = 1024
    noise: float = 2.0
    n_confusable: int = 8
    confusable_radius_km: float = 800.0
    confusable_mix: float = 0.6
    n_val: int = 2000
    n_test: int = 2000

    def key(self) -> str:
        return "synthetic-v{}-{}".format(WORLD_VERSION, "-".join(f"{v}" for v in asdict(self).values()))


def _rotation(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """3x3 rotation taking unit vector ``a`` to unit vector ``b`` (Rodrigues)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def location_features(
    coords: NDArray[np.float64], batch_size: int = 4096, progress: Callable[[int, int], None] | None = None
) -> NDArray[np.float32]:
    """Normalised GeoCLIP location features ``(N, 512)`` of ``(N, 2)`` degrees (float32 input).

    ``progress(done, total)`` is called after every batch.
    """
    from terraloc.encoders import load_location_encoder

    enc = load_location_encoder("geoclip")
    x = torch.from_numpy(np.asarray(coords, dtype=np.float32))
    out = np.zeros((len(x), 512), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            out[s : s + batch_size] = enc.encode(x[s : s + batch_size]).numpy()
            if progress is not None:
                progress(min(s + batch_size, len(x)), len(x))
    return out


def cached_location_features(
    coords: NDArray[np.float64], cache_dir: Path, progress: Callable[[int, int], None] | None = None
) -> NDArray[np.float32]:
    """:func:`location_features` cached as ``.npy`` keyed by the coordinates' hash."""
    import hashlib

    from terraloc.io import atomic_write

    h = hashlib.sha256(np.ascontiguousarray(coords, dtype=np.float64).tobytes()).hexdigest()[:16]
    path = cache_dir / f"locfeat-{h}.npy"
    if path.exists():
        arr = np.load(path)
        if arr.shape == (len(coords), 512):
            return arr
    feats = location_features(coords, progress=progress)
    with atomic_write(path, "wb") as fh:
        np.save(fh, feats)
    return feats


def synthesize(
    coords: NDArray[np.float64], loc_feats: NDArray[np.float32], spec: WorldSpec
) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """Synthetic "visual" embeddings ``(N, dim)`` for coordinates with known location features."""
    rng = np.random.default_rng(spec.seed)
    z = loc_feats.astype(np.float32).copy()
    # Confusable regions: pairs (A_k, B_k) of training locations at least 3000 km apart.
    regions = []
    xyz = to_unit_vectors(coords)
    for _ in range(spec.n_confusable):
        while True:
            a, b = rng.choice(len(coords), 2, replace=False)
            if haversine_km(coords[a], coords[b]) > 3000:
                break
        inside = np.flatnonzero(
            haversine_km(coords, np.broadcast_to(coords[b], coords.shape)) <= spec.confusable_radius_km
        )
        if inside.size:
            rot = _rotation(xyz[b], xyz[a])
            moved = from_unit_vectors(xyz[inside] @ rot.T)
            fz = location_features(moved)
            z[inside] = (1 - spec.confusable_mix) * z[inside] + spec.confusable_mix * fz
        regions.append({"a": coords[a].tolist(), "b": coords[b].tolist(), "n_confused": int(inside.size)})
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    w1 = rng.standard_normal((z.shape[1], spec.hidden)).astype(np.float32) / np.sqrt(z.shape[1])
    w2 = rng.standard_normal((spec.hidden, spec.dim)).astype(np.float32) / np.sqrt(spec.hidden)
    h = np.tanh(3.0 * (z @ w1)) @ w2
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    noise = rng.standard_normal(h.shape).astype(np.float32) / np.sqrt(spec.dim)
    x = h + spec.noise * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), {"confusable_regions": regions}


@dataclass
class World:
    """A built synthetic world: shard folders ``train``, ``val``, ``test`` under ``path``."""

    path: Path
    spec: WorldSpec
    info: dict[str, Any]

    @property
    def train(self) -> Path:
        return self.path / "train"

    @property
    def val(self) -> Path:
        return self.path / "val"

    @property
    def test(self) -> Path:
        return self.path / "test"


def build_world(root: Path, spec: WorldSpec | None = None, progress: Callable[[int, int], None] | None = None) -> World:
    """Build (or reuse) the synthetic world under ``root/<spec key>``; atomic by folder rename.

    ``progress(done, total)`` reports the location features of the 100K coordinates (the slow part).
    """
    spec = spec or WorldSpec()
    final = Path(root) / spec.key()
    if (final / "world.json").exists():
        return World(final, spec, json.loads((final / "world.json").read_text()))
    from terraloc.search.gallery import geoclip_gallery_coords

    coords = geoclip_gallery_coords()
    feats = cached_location_features(coords, Path(root), progress=progress)
    emb, info = synthesize(coords, feats, spec)
    perm = np.random.default_rng(spec.seed + 1).permutation(len(coords))
    test_idx = perm[: spec.n_test]
    val_idx = perm[spec.n_test : spec.n_test + spec.n_val]
    train_idx = np.sort(perm[spec.n_test + spec.n_val :])
    tmp = Path(root) / f".{spec.key()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    meta = {
        "synthetic": True,
        # no image backbone made these: a checkpoint trained on them refuses every real backbone
        "backbone": {"id": f"synthetic:{spec.key()}", "hash": "", "dim": spec.dim},
        "world": spec.key(),
        "note": "SYNTHETIC embeddings: f(GeoCLIP location features) + noise",
    }
    for name, idx in (("train", train_idx), ("val", val_idx), ("test", np.sort(test_idx))):
        ids = [f"mp16-{i:06d}" for i in idx]
        write_shards(
            (
                (ids[s : s + 16384], coords[idx[s : s + 16384]], emb[idx[s : s + 16384]])
                for s in range(0, len(idx), 16384)
            ),
            tmp / name,
            spec.dim,
            shard_rows=16384,
            meta={**meta, "split": name},
        )
    info = {"synthetic": True, "spec": asdict(spec), "n_train": len(train_idx), **info}
    atomic_write_text(tmp / "world.json", json.dumps(info, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return World(final, spec, info)
