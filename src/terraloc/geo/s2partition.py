"""Adaptive, nested S2 geocell partitions (GeoSURGE / Müller-Budack et al.).

Starting from the six cube faces, any cell holding more than ``tau_max`` training coordinates is
split into its four children; cells holding fewer than ``tau_min`` are dropped. Running this
for several decreasing ``tau_max`` gives nested partitions ("levels", coarse → fine): every cell
of a finer level lies inside exactly one cell of each coarser level (a cell split at a coarse
``tau_max`` also exceeds every finer one). Each finest cell (leaf) stores its ancestor's index
at every level; each cell's location is the spherical mean of its training coordinates.

Saved as one ``.npz`` file (``format_version`` inside), written atomically.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from terraloc.errors import InputError, MissingResourceError
from terraloc.geo.coords import validate_latlon
from terraloc.geo.s2 import MAX_LEVEL, cell_levels, cell_tokens, latlon_to_cell_ids, parent_ids, range_min_max
from terraloc.geo.sphere import from_unit_vectors, to_unit_vectors

FORMAT_VERSION = 1
#: GeoSURGE's seven partitions of MP-16 (tau_max per level, coarse → fine) and tau_min.
GEOSURGE_TAU_MAX: tuple[int, ...] = (25000, 10000, 5000, 2000, 1000, 750, 500)
GEOSURGE_TAU_MIN = 50
#: Number of MP-16 training images the published taus refer to.
MP16_SIZE = 4_723_695


def scale_taus(
    n_samples: int,
    tau_max: Sequence[int] = GEOSURGE_TAU_MAX,
    tau_min: int = GEOSURGE_TAU_MIN,
    reference_size: int = MP16_SIZE,
) -> tuple[tuple[int, ...], int]:
    """Scale MP-16 thresholds to a sample of ``n_samples`` coordinates (same cells per image).

    On a small sample several levels scale to the same threshold (300 photos: all seven become
    2); such levels would be identical partitions, so they are merged and fewer levels are
    returned (always at least one, strictly decreasing).

    Returns:
        ``(tau_max per level, tau_min)``, each at least 1 and ``tau_max >= tau_min + 1``.
    """
    f = n_samples / reference_size
    tmin = max(1, round(tau_min * f))
    scaled = [max(tmin + 1, round(t * f)) for t in tau_max]
    distinct = [t for i, t in enumerate(scaled) if i == 0 or t != scaled[i - 1]]
    return tuple(distinct), tmin


def _split_level(
    sorted_leaf: NDArray[np.uint64], tau_max: int, tau_min: int
) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """Adaptive cells for one ``tau_max`` over sorted leaf ids: ``(kept cell ids, their counts)``."""
    undecided = np.ones(len(sorted_leaf), dtype=bool)
    cells: list[NDArray[np.uint64]] = []
    counts: list[NDArray[np.int64]] = []
    for level in range(MAX_LEVEL + 1):
        idx = np.flatnonzero(undecided)
        if idx.size == 0:
            break
        ids = parent_ids(sorted_leaf[idx], level)  # still sorted
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        cnt = np.diff(np.r_[starts, ids.size])
        final = (cnt <= tau_max) | (level == MAX_LEVEL)
        keep = final & (cnt >= tau_min)
        cells.append(ids[starts[keep]])
        counts.append(cnt[keep])
        decided = np.repeat(final, cnt)
        undecided[idx[decided]] = False
    all_cells = np.concatenate(cells) if cells else np.zeros(0, np.uint64)
    all_counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    order = np.argsort(all_cells)
    return all_cells[order], all_counts[order]


def _lookup(cells_sorted: NDArray[np.uint64], leaf: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Index of the cell containing each leaf id, -1 when none (cells sorted, non-overlapping)."""
    if cells_sorted.size == 0:
        return np.full(leaf.shape, -1, dtype=np.int64)
    lo, hi = range_min_max(cells_sorted)
    pos = np.searchsorted(lo, leaf, side="right") - 1
    ok = pos >= 0
    posc = np.clip(pos, 0, None)
    ok &= leaf <= hi[posc]
    return np.where(ok, posc, -1).astype(np.int64)


@dataclass
class S2Partition:
    """Nested adaptive S2 partitions.

    Attributes:
        cell_ids: per level (coarse → fine) a sorted ``(C_l,)`` uint64 array of S2 cell ids.
        counts: per level ``(C_l,)`` training coordinates per cell.
        centers: per level ``(C_l, 2)`` spherical-mean ``(lat, lon)`` degrees of each cell.
        ancestry: ``(C_leaf, L)`` int64: for each finest cell, its cell index at every level
            (the last column is ``arange(C_leaf)``).
        tau_max, tau_min: thresholds used.
        meta: free-form provenance (sample size, source).
    """

    cell_ids: list[NDArray[np.uint64]]
    counts: list[NDArray[np.int64]]
    centers: list[NDArray[np.float64]]
    ancestry: NDArray[np.int64]
    tau_max: tuple[int, ...]
    tau_min: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_levels(self) -> int:
        return len(self.cell_ids)

    @property
    def sizes(self) -> list[int]:
        """Number of cells per level."""
        return [len(c) for c in self.cell_ids]

    def config(self) -> dict[str, Any]:
        """Identity of this partition (used to refuse checkpoints trained on another one)."""
        return {"tau_max": list(self.tau_max), "tau_min": self.tau_min, "sizes": self.sizes}

    @classmethod
    def build(
        cls,
        latlon: ArrayLike,
        tau_max: Sequence[int] = GEOSURGE_TAU_MAX,
        tau_min: int = GEOSURGE_TAU_MIN,
        *,
        source: str | None = None,
    ) -> S2Partition:
        """Build the partitions from ``(N, 2)`` training coordinates (degrees).

        Raises:
            InputError: out-of-range coordinates, thresholds not strictly decreasing, or a level
                left without cells after dropping cells below ``tau_min``.
        """
        coords = validate_latlon(latlon, source=source or "training coordinates")
        tau_max = tuple(int(t) for t in tau_max)
        if not tau_max or any(b >= a for a, b in itertools.pairwise(tau_max)):
            raise InputError(
                f"tau_max must be a non-empty strictly decreasing list, got {list(tau_max)} "
                "(set --tau-max, e.g. 40,10 for a few hundred photos)",
                field="tau_max",
            )
        if tau_min < 1 or tau_min > min(tau_max):
            raise InputError(f"tau_min must be in 1..{min(tau_max)}, got {tau_min}", field="tau_min")
        leaf = latlon_to_cell_ids(coords)
        order = np.argsort(leaf, kind="stable")
        sleaf = leaf[order]
        xyz = to_unit_vectors(coords[order])
        cell_ids, counts, centers = [], [], []
        for li, t in enumerate(tau_max):
            ids, cnt = _split_level(sleaf, t, tau_min)
            if ids.size == 0:
                raise InputError(
                    f"level {li + 1} (tau_max={t}) has no cell with at least tau_min={tau_min} coordinates "
                    f"({len(coords)} coordinates given)",
                    field="tau_min",
                )
            member = _lookup(ids, sleaf)
            m = member >= 0
            sums = np.zeros((len(ids), 3))
            for d in range(3):
                sums[:, d] = np.bincount(member[m], weights=xyz[m, d], minlength=len(ids))
            cell_ids.append(ids)
            counts.append(cnt.astype(np.int64))
            centers.append(from_unit_vectors(sums))
        leaves = cell_ids[-1]
        ancestry = np.stack([_lookup(ids, leaves) for ids in cell_ids], axis=1)
        assert (ancestry >= 0).all(), "partitions are not nested"
        meta = {"n_samples": len(coords), "source": source or ""}
        return cls(cell_ids, counts, centers, ancestry, tau_max, int(tau_min), meta)

    def assign(self, latlon: ArrayLike) -> NDArray[np.int64]:
        """Cell index at every level for ``(N, 2)`` degrees: ``(N, L)`` int64, -1 where dropped."""
        leaf = latlon_to_cell_ids(np.asarray(latlon, dtype=np.float64).reshape(-1, 2))
        return np.stack([_lookup(ids, leaf) for ids in self.cell_ids], axis=1)

    def select_levels(self, levels: Sequence[int]) -> S2Partition:
        """A partition keeping only the given level indices (0-based, must include the finest)."""
        levels = sorted(set(levels))
        if not levels or levels[-1] != self.n_levels - 1:
            raise InputError("selected levels must include the finest level", field="levels")
        return S2Partition(
            [self.cell_ids[i] for i in levels],
            [self.counts[i] for i in levels],
            [self.centers[i] for i in levels],
            self.ancestry[:, levels].copy(),
            tuple(self.tau_max[i] for i in levels),
            self.tau_min,
            dict(self.meta),
        )

    def summary(self) -> list[dict[str, Any]]:
        """Per level: cells, min/median/max coordinates per cell, S2 level range."""
        out = []
        for li, (ids, cnt) in enumerate(zip(self.cell_ids, self.counts, strict=True)):
            lv = cell_levels(ids)
            out.append(
                {
                    "level": li + 1,
                    "tau_max": self.tau_max[li],
                    "cells": len(ids),
                    "covered": int(cnt.sum()),
                    "min": int(cnt.min()),
                    "median": float(np.median(cnt)),
                    "max": int(cnt.max()),
                    "s2_levels": [int(lv.min()), int(lv.max())],
                }
            )
        return out

    def tokens(self, level: int) -> list[str]:
        """S2 tokens of the cells of one level (0-based)."""
        return cell_tokens(self.cell_ids[level])

    def save(self, path: str | Path) -> None:
        """Write the partition atomically as ``.npz`` with ``format_version``."""
        from terraloc.io import atomic_write

        header = {
            "format_version": FORMAT_VERSION,
            "tau_max": list(self.tau_max),
            "tau_min": self.tau_min,
            "meta": self.meta,
        }
        arrays: dict[str, Any] = {"header": np.array(json.dumps(header)), "ancestry": self.ancestry}
        for i in range(self.n_levels):
            arrays[f"cells_{i}"] = self.cell_ids[i]
            arrays[f"counts_{i}"] = self.counts[i]
            arrays[f"centers_{i}"] = self.centers[i]
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> S2Partition:
        """Read a partition written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise MissingResourceError(f"{path}: partition file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                if header.get("format_version") != FORMAT_VERSION:
                    raise InputError(
                        f"unsupported partition format_version {header.get('format_version')} "
                        f"(expected {FORMAT_VERSION})",
                        path=path,
                    )
                n = len(header["tau_max"])
                return cls(
                    [z[f"cells_{i}"] for i in range(n)],
                    [z[f"counts_{i}"] for i in range(n)],
                    [z[f"centers_{i}"] for i in range(n)],
                    z["ancestry"],
                    tuple(header["tau_max"]),
                    int(header["tau_min"]),
                    header.get("meta", {}),
                )
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"not a terraloc partition file ({exc})", path=path) from None


#: GeoEstimation's published MP-16 partitions (``shared/data/geocells/cells_50_<tau_max>.csv``)
MP16_PARTITIONS: tuple[int, ...] = (5000, 2000, 1000)


def compare_with_mp16(coords: NDArray[np.float64]) -> list[dict[str, Any]]:
    """Per published MP-16 partition (tau_min 50; tau_max 5000, 2000, 1000): its cells vs ours on ``coords``.

    Our partition is built from ``coords`` (``(N, 2)`` degrees) with the taus scaled to ``N``
    (:func:`scale_taus`). Returns one dict per partition: ``tau_max_mp16``, ``mp16_cells``,
    ``tau_max_scaled``, ``tau_min_scaled``, ``cells`` (ours), ``mp16_median`` (images per cell),
    ``median_scaled_up`` (ours, times ``MP16_SIZE / N``) and ``shared_tokens`` (S2 tokens in both).
    """
    import pandas as pd

    from terraloc.config import shared_path

    rows = []
    for t in MP16_PARTITIONS:
        df = pd.read_csv(shared_path("data", "geocells", f"cells_50_{t}.csv"), skiprows=2)
        (ts,), tmin = scale_taus(len(coords), (t,), 50)
        p = S2Partition.build(coords, (ts,), tmin)
        ours = set(p.tokens(0))
        factor = MP16_SIZE / len(coords)
        rows.append(
            {
                "tau_max_mp16": t,
                "mp16_cells": len(df),
                "tau_max_scaled": ts,
                "tau_min_scaled": tmin,
                "cells": p.sizes[0],
                "mp16_median": float(df["imgs_per_cell"].median()),
                "median_scaled_up": float(np.median(p.counts[0]) * factor),
                "shared_tokens": len(ours & set(df["hex_id"].astype(str))),
            }
        )
    return rows
