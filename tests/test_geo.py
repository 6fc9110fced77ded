"""Geo core: distances against independent values, validation, spherical mean, projection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from terraloc.errors import InputError
from terraloc.geo import (
    EARTH_RADIUS_KM,
    equal_earth,
    from_unit_vectors,
    haversine_km,
    pairwise_haversine_km,
    spherical_mean,
    to_unit_vectors,
    validate_latlon,
)
from terraloc.geo.coords import normalize_lon

HALF_CIRCUMFERENCE = math.pi * EARTH_RADIUS_KM  # 20015.114 km
ONE_DEGREE = HALF_CIRCUMFERENCE / 180.0  # 111.195 km


def _chord_distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Independent great-circle distance via the 3-D chord length (not haversine)."""
    pa, pb = (np.radians(a), np.radians(b))
    va = np.array([math.cos(pa[0]) * math.cos(pa[1]), math.cos(pa[0]) * math.sin(pa[1]), math.sin(pa[0])])
    vb = np.array([math.cos(pb[0]) * math.cos(pb[1]), math.cos(pb[0]) * math.sin(pb[1]), math.sin(pb[0])])
    chord = float(np.linalg.norm(va - vb))
    return 2 * EARTH_RADIUS_KM * math.asin(chord / 2)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0.0, 0.0), (0.0, 180.0), HALF_CIRCUMFERENCE),  # antipodes on the equator
        ((90.0, 0.0), (-90.0, 0.0), HALF_CIRCUMFERENCE),  # pole to pole
        ((90.0, 0.0), (90.0, 123.0), 0.0),  # the pole is one point whatever the longitude
        ((45.0, 30.0), (-45.0, -150.0), HALF_CIRCUMFERENCE),  # general antipodes
        ((0.0, 179.5), (0.0, -179.5), ONE_DEGREE),  # across the antimeridian, not 359 degrees
        ((0.0, 0.0), (90.0, 0.0), HALF_CIRCUMFERENCE / 2),  # equator to pole
        ((0.0, 180.0), (0.0, -180.0), 0.0),  # the same meridian
    ],
)
def test_haversine_known_values(a: tuple[float, float], b: tuple[float, float], expected: float) -> None:
    assert float(haversine_km(a, b)) == pytest.approx(expected, abs=1e-6)


def test_haversine_matches_chord_formula_on_random_pairs() -> None:
    rng = np.random.default_rng(1)
    a = np.stack([rng.uniform(-90, 90, 200), rng.uniform(-180, 180, 200)], 1)
    b = np.stack([rng.uniform(-90, 90, 200), rng.uniform(-180, 180, 200)], 1)
    got = haversine_km(a, b)
    want = [_chord_distance(tuple(x), tuple(y)) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)


def test_haversine_paris_london_reference() -> None:
    # Paris (48.8566, 2.3522) to London (51.5074, -0.1278): 343.56 km on a 6371.0088 km sphere.
    assert float(haversine_km((48.8566, 2.3522), (51.5074, -0.1278))) == pytest.approx(343.56, abs=0.05)


def test_pairwise_shape_and_symmetry() -> None:
    pts = np.array([[0, 0], [10, 10], [-30, 170]], dtype=float)
    d = pairwise_haversine_km(pts, pts)
    assert d.shape == (3, 3)
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(np.diag(d), 0, atol=1e-9)


@pytest.mark.parametrize(
    ("coords", "field", "needle"),
    [
        ([[91.0, 0.0]], "lat", "outside [-90, 90]"),
        ([[0.0, 180.5]], "lon", "outside [-180, 180]"),
        ([[float("nan"), 0.0]], "lat", "not a finite number"),
        ([[0.0, float("inf")]], "lon", "not a finite number"),
    ],
)
def test_validate_rejects_bad_coordinates(coords: list[list[float]], field: str, needle: str) -> None:
    with pytest.raises(InputError) as info:
        validate_latlon(coords, source="x.csv", rows=[7])
    msg = str(info.value)
    assert needle in msg and "x.csv" in msg and "line 7" in msg and field in msg


def test_validate_accepts_edges_and_shape() -> None:
    arr = validate_latlon([[90, 180], [-90, -180]])
    assert arr.shape == (2, 2)
    with pytest.raises(InputError, match="shape"):
        validate_latlon(np.zeros((3, 3)))


def test_spherical_mean_across_antimeridian() -> None:
    lat, lon = spherical_mean([[0.0, 179.9], [0.0, -179.9]])
    assert lat == pytest.approx(0.0, abs=1e-9)
    assert abs(lon) == pytest.approx(180.0, abs=1e-9)


def test_spherical_mean_weights_and_pole() -> None:
    lat, _ = spherical_mean([[89.0, 0.0], [89.0, 180.0]])
    assert lat == pytest.approx(90.0, abs=1e-9)
    m = spherical_mean([[0.0, 0.0], [0.0, 90.0]], weights=[1.0, 0.0])
    np.testing.assert_allclose(m, [0.0, 0.0], atol=1e-9)


def test_unit_vector_round_trip_and_normalize_lon() -> None:
    pts = np.array([[12.5, -170.25], [-60.0, 45.0], [0.0, 180.0]])
    back = from_unit_vectors(to_unit_vectors(pts))
    assert np.allclose(haversine_km(pts, back), 0, atol=1e-6)
    np.testing.assert_allclose(normalize_lon([190.0, -190.0, 180.0, -180.0, 540.0]), [-170, 170, 180, -180, 180])


def test_equal_earth_matches_geoclip_reference(shared) -> None:  # type: ignore[no-untyped-def]
    ref = np.load(shared / "data/reference/geoclip_location_encoder_reference.npz")
    got = equal_earth(ref["coords"].astype(np.float64))
    np.testing.assert_allclose(got, ref["projection"], atol=1e-5)


def test_atomic_write_replaces_whole_file_and_keeps_normal_permissions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    from terraloc.io import atomic_write, atomic_write_text

    target = tmp_path / "out.txt"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("partial")
        raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
