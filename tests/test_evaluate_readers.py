"""Benchmark and prediction readers on the real shared files."""

from __future__ import annotations

import numpy as np
import pytest

from terraloc.evaluate import load_benchmark, load_predictions
from terraloc.evaluate.ids import image_key


@pytest.mark.parametrize(
    ("name", "rows"),
    [("im2gps3k", 2997), ("im2gps", 237), ("yfcc4k", 4536), ("yfcc26k", 25600)],
)
def test_benchmark_row_counts(shared, name: str, rows: int) -> None:  # type: ignore[no-untyped-def]
    gt = load_benchmark(name)
    assert len(gt) == rows
    assert gt.coords.shape == (rows, 2)
    assert np.all(np.abs(gt.coords[:, 0]) <= 90) and np.all(np.abs(gt.coords[:, 1]) <= 180)


def test_yfcc4k_reads_lat_and_lon_by_name_not_position(shared) -> None:  # type: ignore[no-untyped-def]
    gt = load_benchmark("yfcc4k")
    # First row of the Flickr export: Toronto, with lon (-79.37) written before lat (43.65).
    assert gt.ids[0] == "10201275523.jpg"
    np.testing.assert_allclose(gt.coords[0], [43.649708, -79.365637])


def test_yfcc26k_ids_keep_prefix_and_match_by_stem(shared) -> None:  # type: ignore[no-untyped-def]
    gt = load_benchmark("yfcc26k")
    assert gt.ids[0] == "45/77/3228511372.jpg"
    assert gt.keys[0] == "3228511372"
    assert image_key("/data/yfcc/45/77/3228511372.jpg") == image_key("3228511372") == "3228511372"


def test_geoestimation_predictions_and_published_trailer(shared) -> None:  # type: ignore[no-untyped-def]
    p = load_predictions(shared / "data/predictions/geoestimation_isns_im2gps3k.csv")
    assert p.format == "geoestimation"
    assert len(p) == 2997
    assert p.published["1"] == pytest.approx(10.5439)
    assert p.published["2500"] == pytest.approx(65.966)
    assert p.published["mean_km"] == pytest.approx(3223.12)
    p2 = load_predictions(shared / "data/predictions/geoestimation_isns_im2gps.csv")
    assert len(p2) == 237


def test_terraloc_csv_rank_and_failures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "p.csv"
    f.write_text("image,rank,lat,lon,probability\na.jpg,1,10,20,0.5\na.jpg,2,11,21,0.2\nb.jpg,1,,,\n")
    p = load_predictions(f)
    assert p.ids == ["a.jpg", "b.jpg"]
    np.testing.assert_allclose(p.coords[0], [10, 20])
    assert np.isnan(p.coords[1]).all()


def test_jsonl_predictions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "p.jsonl"
    f.write_text('{"image": "a.jpg", "lat": 1.5, "lon": 2.5}\n\n{"image": "b", "lat": null, "lon": null}\n')
    p = load_predictions(f)
    assert p.ids == ["a.jpg", "b"]
    np.testing.assert_allclose(p.coords[0], [1.5, 2.5])
