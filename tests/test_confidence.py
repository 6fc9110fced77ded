"""Calibrated confidence: features, calibrators (monotone, recover known probabilities, JSON round
trip, refusal of a foreign one), distinct places, region, abstention in every output format, the
tiny-CLIP GeoCLIP head carrying confidence end to end, and the one-line errors of `calibrate`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from terraloc.confidence import Calibrator, confidence_features, confidence_region, merge_distinct
from terraloc.confidence.calibrator import THRESHOLDS_KM, chain
from terraloc.confidence.features import BASE_FEATURES
from terraloc.errors import InputError
from terraloc.pipeline.types import ImagePrediction, Prediction


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features x (n, 2) and errors drawn so that P(<= t_j | > t_{j-1}, x) = sigmoid(a_j + 3 x0) exactly."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2))
    a = np.array([-2.0, -1.0, 0.0, 0.5, 1.0])
    h = _sigmoid(a[None, :] + 3 * x[:, :1])  # (n, 5)
    err = np.full(n, 20000.0)
    edges = (0.0, *THRESHOLDS_KM)
    for i in range(n):
        for j in range(5):
            if rng.random() < h[i, j]:
                err[i] = rng.uniform(edges[j], edges[j + 1])
                break
    return x, err, chain(h)


def test_chain_is_monotone_for_any_conditional_probabilities() -> None:
    h = np.random.default_rng(1).uniform(0, 1, (500, 5))
    p = chain(h)
    assert (np.diff(p, axis=1) >= 0).all() and (p >= 0).all() and (p <= 1).all()


@pytest.mark.parametrize("family", ["isotonic", "logistic", "gbm"])
def test_calibrator_is_monotone_across_thresholds(family: str) -> None:
    x, err, _ = _synthetic(600)
    cal = Calibrator.fit(family, x, err, ("mass_1km", "other"), {"head": "test"})
    p = cal.predict(np.random.default_rng(2).uniform(-3, 3, (1000, 2)))  # also far outside the data
    assert p.shape == (1000, 5) and (np.diff(p, axis=1) >= -1e-12).all()


@pytest.mark.parametrize(("family", "tol"), [("logistic", 0.03), ("gbm", 0.06), ("isotonic", 0.07)])
def test_calibrator_recovers_known_probabilities(family: str, tol: float) -> None:
    x, err, _ = _synthetic(8000)
    names = ("mass_1km", "other")  # isotonic reads mass_<t>km, else the first column: the informative one
    cal = Calibrator.fit(family, x, err, names, {"head": "test"})
    if family == "isotonic":
        from terraloc.confidence.binary import IsotonicModel

        assert all(isinstance(m, IsotonicModel) and m.column == 0 for m in cal.models)
    grid = np.c_[np.linspace(-0.9, 0.9, 19), np.zeros(19)]
    truth = chain(_sigmoid(np.array([-2.0, -1.0, 0.0, 0.5, 1.0])[None, :] + 3 * grid[:, :1]))
    got = cal.predict(grid)
    assert np.abs(got - truth).mean() < tol, (family, np.abs(got - truth).mean())


def test_save_load_round_trip_and_refusal_of_a_foreign_calibrator(tmp_path: Path) -> None:
    x, err, _ = _synthetic(400)
    ident = {"head": "geoclip", "backbone": {"hash": "abc"}}
    for family in ("isotonic", "logistic", "gbm"):
        cal = Calibrator.fit(family, x, err, ("mass_1km", "other"), ident)
        path = tmp_path / f"{family}.json"
        cal.save(path)
        obj = json.loads(path.read_text())
        assert obj["format"] == "terraloc-calibrator" and obj["family"] == family
        back = Calibrator.load(path, ident)
        np.testing.assert_array_equal(back.predict(x), cal.predict(x))
        with pytest.raises(InputError, match=r"fitted for head 'geoclip'.*head 'refdb'"):
            Calibrator.load(path, {"head": "refdb", "backbone": {"hash": "abc"}})
        with pytest.raises(InputError, match="configuration"):
            Calibrator.load(path, {"head": "geoclip", "backbone": {"hash": "other"}})
    (tmp_path / "bad.json").write_text('{"format": "something"}')
    with pytest.raises(InputError, match="not a terraloc calibrator"):
        Calibrator.load(tmp_path / "bad.json")


def test_nan_features_are_refused() -> None:
    x, err, _ = _synthetic(200)
    cal = Calibrator.fit("logistic", x, err, ("mass_1km", "other"), {"head": "t"})
    x[3, 1] = np.nan
    with pytest.raises(InputError, match="'other' is not a finite number"):
        cal.predict(x)


def test_features_agreement_and_padding() -> None:
    # image 0: all candidates in one spot; image 1: spread over continents (+ a padding row)
    c0 = np.array([[48.85, 2.35]] * 4)
    c1 = np.array([[48.85, 2.35], [40.7, -74.0], [-33.9, 151.2], [np.nan, np.nan]])
    f = confidence_features(np.stack([c0, c1]), np.array([[0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]]))
    assert f.names[: len(BASE_FEATURES)] == BASE_FEATURES
    r0, r1 = f.row(0), f.row(1)
    assert r0["mass_1km"] == pytest.approx(1.0) and r1["mass_1km"] == pytest.approx(0.4 / 0.9)
    assert r0["spread_km"] == pytest.approx(0.0) and r1["spread_km"] > 8
    assert r1["captured"] == pytest.approx(0.9)
    with pytest.raises(InputError, match="no valid candidate"):
        confidence_features(np.full((1, 2, 2), np.nan), np.ones((1, 2)))


def test_distinct_places_and_region() -> None:
    xy = np.array([[48.85, 2.35], [48.86, 2.36], [51.5, -0.12], [48.80, 2.30], [40.7, -74.0]])
    p = np.array([0.3, 0.2, 0.25, 0.15, 0.1])
    raw_xy, raw_p, _ = merge_distinct(xy, p, 0)
    np.testing.assert_array_equal(raw_xy, xy)
    np.testing.assert_array_equal(raw_p, p)
    m_xy, m_p, n = merge_distinct(xy, p, 25)
    np.testing.assert_array_equal(m_xy, xy[[0, 2, 4]])  # first answer stays the head's first
    np.testing.assert_allclose(m_p, [0.65, 0.25, 0.1])
    assert list(n) == [3, 1, 1]
    reg = confidence_region(m_xy, m_p, level=0.9)
    assert reg["places"] == [[48.85, 2.35], [51.5, -0.12]] and reg["covered"] == pytest.approx(0.9)
    assert reg["geometry"]["type"] == "MultiPolygon" and len(reg["geometry"]["coordinates"]) == 2


def _abstained() -> ImagePrediction:
    conf = {"1": 0.01, "25": 0.2, "200": 0.4, "750": 0.6, "2500": 0.8}
    return ImagePrediction("a.jpg", [], None, {"head": "geoclip"}, confidence=conf, abstained=True)


def _answered() -> ImagePrediction:
    conf = {"1": 0.1, "25": 0.9, "200": 0.95, "750": 0.97, "2500": 0.99}
    region = {"places": [[48.85, 2.35]], "level": 0.9, "covered": 0.93, "radius_km": 25.0}
    return ImagePrediction(
        "b.jpg", [Prediction(1, 48.85, 2.35, 0.5, "Paris")], None, {"head": "geoclip"}, confidence=conf, region=region
    )


def test_abstention_rows_in_every_output_format(tmp_path: Path) -> None:
    from terraloc.evaluate.predictions import load_predictions
    from terraloc.pipeline.outputs import CSV_COLUMNS, StreamWriter, geojson, html_map

    preds = [_abstained(), _answered()]
    for fmt, name in (("csv", "p.csv"), ("json", "p.jsonl")):
        path = tmp_path / name
        with open(path, "w", newline="") as fh:
            w = StreamWriter(fh, fmt)
            for p in preds:
                w.write(p)
        if fmt == "csv":
            rows = list(csv.DictReader(path.read_text().splitlines()))
            assert list(rows[0]) == CSV_COLUMNS
            assert rows[0]["image"] == "a.jpg" and rows[0]["abstained"] == "1" and rows[0]["lat"] == ""
            assert rows[0]["confidence_25"] == "0.2000" and rows[1]["confidence_25"] == "0.9000"
        else:
            objs = [json.loads(x) for x in path.read_text().splitlines()]
            assert objs[0]["abstained"] is True and objs[0]["lat"] is None and objs[0]["confidence"]["25"] == 0.2
            assert objs[1]["confidence"]["25"] == 0.9 and objs[1]["region"]["places"] == [[48.85, 2.35]]
        loaded = load_predictions(path)  # terraloc eval: an abstained image has no prediction
        assert loaded.extras is not None and list(loaded.extras.abstained) == [True, False]
        assert np.isnan(loaded.coords[0]).all() and np.isfinite(loaded.coords[1]).all()
        assert loaded.extras.confidence is not None and loaded.extras.confidence[1, 1] == pytest.approx(0.9)
    gj = geojson(preds)
    kinds = [(f["properties"].get("abstained"), f["properties"].get("kind"), f["geometry"]) for f in gj["features"]]
    assert kinds[0] == (True, None, None)
    assert kinds[1][1] == "confidence_region" and kinds[2][2]["type"] == "Point"
    html = html_map(preds)
    assert "likely within 1 km: 10%" in html and "L.circle(" in html


def test_abstention_in_the_table(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console

    from terraloc.cli import predict_cmd

    buf = io.StringIO()
    orig = predict_cmd.out_console
    predict_cmd.out_console = lambda: Console(file=buf, width=200)  # type: ignore[assignment]
    try:
        predict_cmd._table([_abstained(), _answered()])
    finally:
        predict_cmd.out_console = orig  # type: ignore[assignment]
    text = buf.getvalue()
    assert "abstained" in text and "likely within" in text


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from terraloc.encoders.image import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip_conf"))


def test_geoclip_tiny_clip_carries_confidence_end_to_end(shared, tmp_path: Path, cli, tiny_clip: Path) -> None:  # type: ignore[no-untyped-def]
    from terraloc.pipeline import Geolocator, GeolocatorConfig
    from terraloc.serve.geolocator import GeolocatorPredictor

    geo = Geolocator(GeolocatorConfig(backbone=str(tiny_clip), places=False))
    # a calibrator for exactly this configuration (fitted on synthetic features: this is plumbing)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (300, len(BASE_FEATURES)))
    err = np.where(x[:, 1] > 0.5, 10.0, 3000.0) * rng.uniform(0.5, 1.5, 300)
    cal_path = tmp_path / "cal.json"
    Calibrator.fit("logistic", x, err, BASE_FEATURES, geo.identity).save(cal_path)

    photos = sorted((shared / "data/photos/osv5m").glob("*.jpg"))[:3]
    out = tmp_path / "p.jsonl"
    r = cli("predict", *photos, "--backbone", tiny_clip, "--format", "jsonl", "-o", out, "--calibrator", cal_path)
    assert r.code == 0, r.err
    objs = [json.loads(line) for line in out.read_text().splitlines()]
    for o in objs:
        p = [o["confidence"][str(t)] for t in THRESHOLDS_KM]
        assert all(0 <= v <= 1 for v in p) and p == sorted(p)
        assert set(o["features"]) == set(BASE_FEATURES) and o["region"]["places"]
        assert len(o["candidates"]) == 5
        # distinct places: no two candidates within 25 km
        xy = np.array([[c["lat"], c["lon"]] for c in o["candidates"]])
        from terraloc.geo import pairwise_haversine_km

        d = pairwise_haversine_km(xy, xy)
        assert (d[np.triu_indices(5, 1)] > 25).all()
    r = cli("predict", photos[0], "--backbone", tiny_clip, "--format", "csv", "--calibrator", cal_path)
    assert r.code == 0 and "confidence_25" in r.out.splitlines()[0]
    assert r.out.splitlines()[1].split(",")[13] != ""  # confidence_25 filled
    # --min-confidence 25:1.0 can never be met: every image is an explicit abstained row
    r = cli("predict", *photos, "--backbone", tiny_clip, "--format", "csv", "--calibrator", cal_path,
            "--min-confidence", "25:1.0")  # fmt: skip
    assert r.code == 0, r.err
    rows = list(csv.DictReader(r.out.splitlines()))
    assert len(rows) == 3 and all(row["abstained"] == "1" and row["lat"] == "" for row in rows)
    assert "3 abstained" in r.err
    # the HTTP service answers the same objects
    geo_c = Geolocator(GeolocatorConfig(backbone=str(tiny_clip), places=False, calibrator=str(cal_path)))
    from PIL import Image

    [obj] = GeolocatorPredictor(geo_c).predict([Image.open(photos[0]).convert("RGB")], top_k=3)
    assert set(obj["confidence"]) == {"1", "25", "200", "750", "2500"} and obj["abstained"] is False
    import httpx

    from serve_support import running_server
    from terraloc.serve import ServeSettings, create_app

    strict = geo_c.with_config(min_confidence="25:1.0")
    for predictor, abstained in ((GeolocatorPredictor(geo_c), False), (GeolocatorPredictor(strict), True)):
        with running_server(create_app(ServeSettings(), predictor)) as base, httpx.Client(base_url=base) as c:
            r_http = c.post("/v1/predict", files={"file": ("p.jpg", photos[0].read_bytes(), "image/jpeg")})
        assert r_http.status_code == 200, r_http.text
        got = r_http.json()
        assert got["abstained"] is abstained and set(got["confidence"]) == {"1", "25", "200", "750", "2500"}
        assert (got["lat"] is None) == abstained
    # a calibrator of another configuration is refused in one line, nothing written
    other = Calibrator.fit("logistic", x, err, BASE_FEATURES, {**geo.identity, "head": "refdb"})
    other.save(tmp_path / "other.json")
    out2 = tmp_path / "never.csv"
    r = cli(
        "predict", photos[0], "--backbone", tiny_clip, "-f", "csv", "-o", out2, "--calibrator", tmp_path / "other.json"
    )
    assert r.code == 2 and "fitted for head 'refdb'" in r.err and len(r.err.strip().splitlines()) == 1
    assert not out2.exists() or "1000" not in out2.read_text()
    # raw list (0 km) is the head's own top-k
    from terraloc.encoders.image import load_image

    raw_geo = Geolocator(GeolocatorConfig(backbone=str(tiny_clip), places=False, distinct_km=0))
    raw = raw_geo.predict(photos[0], 5)[0]
    ref = raw_geo.run_batch(raw_geo.backbone.preprocess.batch([load_image(photos[0])]), 5)
    np.testing.assert_allclose([[c.lat, c.lon] for c in raw.candidates], ref.coords[0], atol=1e-9)


def _write_preds(path: Path, n: int, *, nan_at: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "lat", "lon", "f_mass_25km", "f_other", "config"])
        for i in range(n):
            good = rng.random() < 0.5
            lat = 10.0 + (0.01 if good else 5.0) * rng.random()
            f = "nan" if nan_at == i else f"{(0.8 if good else 0.2) + 0.1 * rng.random():.4f}"
            w.writerow([f"img{i}.jpg", f"{lat:.5f}", "20.0", f, f"{rng.random():.4f}", "cfgkey"])
    return path


def _write_truth(path: Path, n: int) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "lat", "lon"])
        w.writerows([[f"img{i}.jpg", "10.0", "20.0"] for i in range(n)])
    return path


def test_calibrate_cli_fits_and_refuses_bad_input(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    truth = _write_truth(tmp_path / "truth.csv", 200)
    out = tmp_path / "cal.json"
    r = cli("calibrate", "--predictions", _write_preds(tmp_path / "p.csv", 200), "--ground-truth", truth, "--out", out,
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    rep = json.loads(r.out)
    assert rep["chosen"] in ("isotonic", "logistic", "gbm") and rep["nested"]["n"] == 200
    cal = Calibrator.load(out, "cfgkey")
    assert cal.feature_names == ("mass_25km", "other")
    with pytest.raises(InputError):
        Calibrator.load(out, "another")
    # too few photos: says how many are needed, writes nothing
    out2 = tmp_path / "few.json"
    r = cli("calibrate", "--predictions", _write_preds(tmp_path / "few.csv", 40), "--ground-truth", truth, "-o", out2)
    assert r.code == 2 and "at least 100" in r.err and not out2.exists()
    # NaN feature: names the image
    r = cli("calibrate", "--predictions", _write_preds(tmp_path / "nan.csv", 150, nan_at=7), "--ground-truth", truth,
            "-o", out2)  # fmt: skip
    assert r.code == 2 and "img7.jpg" in r.err and not out2.exists()
    # predictions without features
    plain = tmp_path / "plain.csv"
    plain.write_text("image,lat,lon\n" + "".join(f"img{i}.jpg,10,20\n" for i in range(150)))
    r = cli("calibrate", "--predictions", plain, "--ground-truth", truth, "-o", out2)
    assert r.code == 2 and "no confidence features" in r.err and not out2.exists()
    assert len(r.err.strip().splitlines()) == 1


def test_min_confidence_values(cli) -> None:  # type: ignore[no-untyped-def]
    from terraloc.confidence import parse_min_confidence

    assert parse_min_confidence("25:0.8").probability == 0.8  # type: ignore[union-attr]
    for bad in ("25", "30:0.5", "25:1.5", "x:y"):
        with pytest.raises(InputError):
            parse_min_confidence(bad)
    r = cli("predict", "nothing.jpg", "--min-confidence", "25:0.8")
    assert r.code == 2 and "--calibrator" in r.err


@pytest.mark.slow
def test_rag_eval_carries_confidence_and_calibrate_round_trip(shared, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    cands = shared / "data/rag/g3_candidates_im2gps3k_dev.csv"
    r = cli(
        "rag", "eval", "--candidates", cands, "--limit", "200", "--out", tmp_path / "r", "--json", "--bootstrap", "10"
    )
    assert r.code == 0, r.err
    res = json.loads(r.out)
    cal = res["methods"]["default"]["calibration"]
    assert cal["n"] == 200 and set(cal["ece"]) == {"1", "25", "200", "750", "2500"}
    assert (tmp_path / "r/reliability.png").exists() and (tmp_path / "r/risk_coverage.png").exists()
    rows = list(csv.DictReader((tmp_path / "r/predictions_consensus.csv").read_text().splitlines()))
    assert len(rows) == 200 and rows[0]["confidence_25"] and rows[0]["f_mass_25km"] and rows[0]["config"]
    r = cli("calibrate", "--predictions", tmp_path / "r/predictions_consensus.csv", "--ground-truth", cands,
            "--id-col", "IMG_ID", "--lat-col", "LAT", "--lon-col", "LON", "-o", tmp_path / "c.json")  # fmt: skip
    assert r.code == 0, r.err
    r = cli("rag", "eval", "--candidates", cands, "--limit", "120", "--calibrator", tmp_path / "c.json", "--json",
            "--bootstrap", "10")  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads(r.out)["methods"]["consensus"]["calibration"]["source"] == "calibrator"
    foreign = tmp_path / "foreign.json"
    x, err, _ = _synthetic(200)
    Calibrator.fit("logistic", x, err, ("mass_1km", "other"), {"head": "geoclip"}).save(foreign)
    r = cli("rag", "eval", "--candidates", cands, "--limit", "120", "--calibrator", foreign, "--out", tmp_path / "no")
    assert r.code == 2 and "none of this run's methods" in r.err and not (tmp_path / "no").exists()


def test_features_from_the_candidates_type() -> None:
    from terraloc.confidence.features import candidates_features
    from terraloc.models.head import Candidates

    rows = [[(48.85, 2.35, 0.6, {}), (48.86, 2.36, 0.3, {})], [(10.0, 20.0, 0.9, {})]]
    f = candidates_features(Candidates.from_rows(rows))
    assert f.row(0)["mass_25km"] == pytest.approx(1.0) and f.row(1)["top_prob"] == pytest.approx(1.0)


@pytest.mark.slow
def test_web_page_shows_confidence_in_words_region_and_abstention(shared, tmp_path: Path, tiny_clip: Path) -> None:  # type: ignore[no-untyped-def]
    """The map page says "likely within 25 km: N%", draws the 90% region, and says when it abstains."""
    import os

    from serve_support import running_server
    from terraloc.pipeline import Geolocator, GeolocatorConfig
    from terraloc.serve import ServeSettings, create_app
    from terraloc.serve.geolocator import GeolocatorPredictor

    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{chromium} missing: scripts/setup.d/30-browser.sh installs it")
        pytest.skip(f"{chromium} not installed")
    from playwright.sync_api import sync_playwright

    geo = Geolocator(GeolocatorConfig(backbone=str(tiny_clip)))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (300, len(BASE_FEATURES)))
    err = np.where(x[:, 1] > 0.5, 10.0, 3000.0) * rng.uniform(0.5, 1.5, 300)
    cal = tmp_path / "cal.json"
    Calibrator.fit("logistic", x, err, BASE_FEATURES, geo.identity).save(cal)
    photo = sorted((shared / "data/photos/osv5m").glob("*.jpg"))[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"], headless=True)
        for min_conf, expect in ((None, "Likely within 25 km: "), ("25:1.0", "not confident enough to answer")):
            g = geo.with_config(calibrator=str(cal), min_confidence=min_conf)
            with running_server(create_app(ServeSettings(), GeolocatorPredictor(g))) as url:
                page = browser.new_page(viewport={"width": 1280, "height": 820})
                page.goto(url + "/")
                page.wait_for_selector("#model-status.ok", timeout=60_000)
                page.set_input_files("#file", str(photo))
                page.wait_for_function(
                    "t => document.querySelector('#summary').innerText.includes(t)", arg=expect, timeout=60_000
                )
                summary = page.locator("#summary").inner_text()
                regions = page.locator("path[stroke='#8e44ad']").count()
                if min_conf is None:
                    assert "%" in summary.split("Likely within 25 km: ", 1)[1] and regions >= 1, summary
                else:
                    assert regions == 0 and page.locator(".cand-marker").count() == 0, summary
                page.close()
        browser.close()
