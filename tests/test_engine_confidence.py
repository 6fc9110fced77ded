"""Bulk predictions (``terraloc predict --engine``) say how far to trust them exactly as one-process
predictions do: the same calibrated confidence, region, features and abstentions in JSON Lines,
CSV and GeoJSON, and an abstention is an answer, not a failure."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "data/reference/geoclip_predict/tiny_clip"


@pytest.fixture(scope="module")
def setup(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, Path]:
    """Four shared photos and a broken file, and a calibrator fitted for the tiny-CLIP GeoCLIP head."""
    from terraloc.confidence import Calibrator
    from terraloc.confidence.features import BASE_FEATURES
    from terraloc.pipeline import Geolocator, GeolocatorConfig

    root = shared
    d = tmp_path_factory.mktemp("engine-conf")
    tiny = root / TINY
    photos = sorted((root / "data/photos/osv5m").glob("*.jpg"))[:4]
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    photos.insert(2, d / "broken.jpg")
    geo = Geolocator(GeolocatorConfig(backbone=str(tiny), places=False))
    rng = np.random.default_rng(0)  # synthetic fit: this checks the plumbing, not calibration
    x = rng.uniform(0, 1, (300, len(BASE_FEATURES)))
    err = np.where(x[:, 1] > 0.5, 10.0, 3000.0) * rng.uniform(0.5, 1.5, 300)
    Calibrator.fit("logistic", x, err, BASE_FEATURES, geo.identity).save(d / "cal.json")
    return photos, tiny, d / "cal.json"


def _close(a: Any, b: Any) -> bool:
    """Equal JSON values, floats within 1e-5 (other batch compositions: float32 rounding differs)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_engine_predictions_carry_the_same_confidence(setup, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    photos, tiny, cal = setup
    common = ["--backbone", tiny, "--no-places", "--calibrator", cal, "--top-k", "3"]
    one, bulk = tmp_path / "one.jsonl", tmp_path / "bulk.jsonl"
    r = cli("predict", *photos, *common, "-o", one)
    assert r.code == 2 and "broken.jpg" in r.err, r.err
    r = cli("predict", *photos, *common, "-o", bulk, "--engine", "local", "--part-size", "2")
    assert r.code == 2 and "4 done" in r.err and "1 failed" in r.err, r.err
    a = [json.loads(line) for line in one.read_text().splitlines()]
    b = [json.loads(line) for line in bulk.read_text().splitlines()]
    assert len(a) == len(b) == 5
    for x, y in zip(a, b, strict=True):
        assert _close(x, y), (x, y)
    ok = [x for x in b if x["error"] is None]
    assert len(ok) == 4 and all(set(x["confidence"]) == {"1", "25", "200", "750", "2500"} for x in ok)
    assert all(x["region"]["places"] and x["features"] and x["abstained"] is False for x in ok)

    # GeoJSON: the same features as the one-process writer (confidence regions included)
    gj_one, gj_bulk = tmp_path / "one.geojson", tmp_path / "bulk.geojson"
    assert cli("predict", *photos, *common, "-o", gj_one, "--format", "geojson").code == 2
    assert cli("predict", *photos, *common, "-o", gj_bulk, "--engine", "local").code == 2
    fa, fb = json.loads(gj_one.read_text())["features"], json.loads(gj_bulk.read_text())["features"]
    assert sum(f["properties"].get("kind") == "confidence_region" for f in fb) == 4
    assert _close(fa, fb)


def test_an_abstention_is_an_answer_not_a_failure(setup, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    photos, tiny, cal = setup
    good = [p for p in photos if p.name != "broken.jpg"]
    out = tmp_path / "strict.csv"
    # P(error <= 25 km) >= 1.0 is never met: every photo abstains
    r = cli("predict", *good, "--backbone", tiny, "--no-places", "--calibrator", cal, "--min-confidence", "25:1.0",
            "-o", out, "--engine", "local", "--part-size", "3")  # fmt: skip
    assert r.code == 0 and "4 done" in r.err and "0 failed" in r.err and "4 abstained" in r.err, r.err
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == 4 and all(row["abstained"] == "1" and row["lat"] == "" for row in rows)
    assert all(row["confidence_25"] != "" for row in rows)
    errors = (tmp_path / "strict.csv.parts" / "errors.csv").read_text().splitlines()
    assert len(errors) == 1  # the header only
    # `terraloc eval` counts them as not predicted, as for one-process predictions
    truth = tmp_path / "truth.csv"
    truth.write_text("image,lat,lon\n" + "".join(f"{p},0.0,0.0\n" for p in good))
    r = cli("eval", "--predictions", out, "--ground-truth", truth, "--json")
    assert r.code == 0, r.err
    rep = json.loads(r.out)
    assert rep["n"] == 4 and rep["n_predicted"] == 0 and rep["accuracy"]["2500"] == 0.0


def test_the_format_follows_the_out_suffix(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """``-o FILE.jsonl`` needs no --format; a name that says nothing is refused before any work."""
    out = tmp_path / "preds.txt"
    r = cli("predict", tmp_path / "a.jpg", "-o", out)
    assert r.code == 2 and "cannot tell the format of 'preds.txt'" in r.err and "Traceback" not in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and not out.exists()
    r = cli("predict", tmp_path / "a.jpg", "-o", out, "--format", "table")
    assert r.code == 2 and "cannot tell the format" in r.err, r.err
