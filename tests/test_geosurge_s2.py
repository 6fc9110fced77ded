"""S2 cell ids against the reference libraries, and adaptive nested partitions."""

from __future__ import annotations

import numpy as np
import pytest
import s2cell
import s2sphere

from terraloc.errors import InputError
from terraloc.geo.s2 import cell_levels, cell_tokens, latlon_to_cell_ids, parent_ids, range_min_max
from terraloc.geo.s2partition import S2Partition, scale_taus
from terraloc.geo.sphere import spherical_mean

SPECIAL = np.array(
    [
        [90.0, 0.0],
        [-90.0, 0.0],
        [90.0, 180.0],
        [-90.0, -123.4],
        [0.0, 180.0],
        [0.0, -180.0],
        [45.0, 180.0],
        [-45.0, -180.0],
        [12.3, 179.9999999],
        [-12.3, -179.9999999],
        [89.9999999, 179.99999],
        [0.0, 0.0],
        [0.0, 90.0],
        [0.0, -90.0],
        [35.26438968275466, 45.0],  # cube corner direction
        [-35.26438968275466, -135.0],
        [45.0, 45.0],
        [-0.0, -0.0],
    ]
)


def _reference(points: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array(
        [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(p[0], p[1])).parent(level).id() for p in points],
        dtype=np.uint64,
    )
    b = np.array([s2cell.lat_lon_to_cell_id(p[0], p[1], level) for p in points], dtype=np.uint64)
    return a, b


@pytest.mark.parametrize("level", [0, 1, 4, 10, 17, 23, 30])
def test_cell_ids_match_s2sphere_and_s2cell(level: int) -> None:
    rng = np.random.default_rng(level)
    pts = np.r_[np.c_[rng.uniform(-90, 90, 1500), rng.uniform(-180, 180, 1500)], SPECIAL]
    ours = latlon_to_cell_ids(pts, level)
    ref_a, ref_b = _reference(pts, level)
    np.testing.assert_array_equal(ours, ref_a)
    np.testing.assert_array_equal(ours, ref_b)
    assert (cell_levels(ours) == level).all()


def test_tokens_parents_and_ranges() -> None:
    pts = SPECIAL
    leaf = latlon_to_cell_ids(pts)
    for lv in (3, 12):
        par = parent_ids(leaf, lv)
        np.testing.assert_array_equal(par, latlon_to_cell_ids(pts, lv))
        lo, hi = range_min_max(par)
        assert ((lo <= leaf) & (leaf <= hi)).all()
        toks = cell_tokens(par)
        assert toks == [s2cell.cell_id_to_token(int(c)) for c in par]


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[48.85, 2.35], [40.7, -74.0], [35.7, 139.7], [-33.9, 151.2], [64.1, 179.5], [-89.0, 0.0]])
    k = rng.integers(0, len(centres), n)
    pts = centres[k] + rng.normal(0, [1.0, 2.0], (n, 2)) * rng.uniform(0.01, 3, (n, 1))
    pts[:, 0] = np.clip(pts[:, 0], -90, 90)
    pts[:, 1] = (pts[:, 1] + 180) % 360 - 180
    return np.r_[pts, rng.uniform([-90, -180], [90, 180], (n // 10, 2))]


def test_partition_is_nested_and_respects_thresholds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    coords = _clustered(6000)
    part = S2Partition.build(coords, (800, 300, 100, 40), 5)
    assert part.n_levels == 4 and part.sizes == sorted(part.sizes)
    labels = part.assign(coords)
    for li in range(part.n_levels):
        cnt = np.bincount(labels[labels[:, li] >= 0, li], minlength=part.sizes[li])
        np.testing.assert_array_equal(cnt, part.counts[li])
        assert (part.counts[li] >= 5).all()
        # Only leaf-level (30) cells of identical coordinates (the pole) may exceed tau_max.
        over = part.counts[li] > part.tau_max[li]
        assert (cell_levels(part.cell_ids[li][over]) == 30).all()
        # Centre = spherical mean of the cell's coordinates.
        for c in (0, part.sizes[li] // 2):
            np.testing.assert_allclose(part.centers[li][c], spherical_mean(coords[labels[:, li] == c]), atol=1e-9)
    # Every finest cell lies inside its recorded ancestor at each level.
    leaves = part.cell_ids[-1]
    for li in range(part.n_levels):
        lo, hi = range_min_max(part.cell_ids[li][part.ancestry[:, li]])
        assert ((lo <= leaves) & (leaves <= hi)).all()
    # A sample's labels agree with the leaf's ancestry.
    ok = labels[:, -1] >= 0
    np.testing.assert_array_equal(part.ancestry[labels[ok, -1]], labels[ok])
    # Round trip, atomically written.
    part.save(tmp_path / "p.npz")
    back = S2Partition.load(tmp_path / "p.npz")
    assert back.sizes == part.sizes and back.tau_max == part.tau_max
    np.testing.assert_array_equal(back.ancestry, part.ancestry)
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]


def test_partition_bad_input() -> None:
    with pytest.raises(InputError, match="latitude 91"):
        S2Partition.build(np.array([[91.0, 0.0], [0.0, 0.0]]), (10,), 1)
    with pytest.raises(InputError, match="no cell"):
        S2Partition.build(np.array([[0.0, 0.0], [0.0, 90.0], [0.0, 180.0]]), (2,), 2)
    with pytest.raises(InputError, match="decreasing"):
        S2Partition.build(_clustered(50), (10, 20), 1)


def test_scale_taus() -> None:
    tmax, tmin = scale_taus(100_000)
    assert tmax == (529, 212, 106, 42, 21, 16, 11) and tmin == 1
