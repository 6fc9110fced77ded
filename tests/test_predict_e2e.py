"""End to end: `terraloc predict` (tiny CLIP, every shared photo) then `terraloc eval`; output formats;
resume; reference-photo databases with EfficientNet-Lite0; offline place names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from terraloc.encoders.image import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.mark.slow
def test_predict_then_eval_on_all_shared_photos(shared, tmp_path: Path, cli, tiny_clip: Path) -> None:  # type: ignore[no-untyped-def]
    im2 = shared / "data/photos/im2gps3k_dev"
    osv = shared / "data/photos/osv5m"
    out1, out2 = tmp_path / "im2gps.csv", tmp_path / "osv.csv"
    r = cli(
        "predict", im2, "--backbone", tiny_clip, "--format", "csv", "-o", out1, "--top-k", "3", "--batch-size", "32"
    )
    assert r.code == 0, r.err
    df = pd.read_csv(out1, dtype=str, keep_default_na=False)
    assert df["image"].nunique() == 300 and (df["error"] == "").all() and len(df) == 900
    assert {"rank", "probability", "city", "admin1", "country", "weights_hash"} <= set(df.columns)
    r = cli("eval", "--predictions", out1, "--benchmark", "im2gps3k", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["n"] == 2997 and res["n_predicted"] == 300  # all 300 matched to the full benchmark file
    assert res["extra_predictions"] == 0

    r = cli("predict", osv, "--backbone", tiny_clip, "--format", "csv", "--top-k", "1")
    assert r.code == 0, r.err
    out2.write_text(r.out)
    r = cli(
        "eval", "--predictions", out2, "--ground-truth", osv / "osv5m_photos.csv", "--id-col", "path", "--json"
    )  # fmt: skip
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["coverage"] == pytest.approx(100.0) and res["n"] == 71


def test_formats_map_and_resume(shared, tmp_path: Path, cli, tiny_clip: Path) -> None:  # type: ignore[no-untyped-def]
    photos = sorted((shared / "data/photos/osv5m").glob("*.jpg"))[:4]
    listing = tmp_path / "list.csv"
    with open(listing, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path"])
        w.writerows([[str(p)] for p in photos[:3]])
    out = tmp_path / "out.jsonl"
    r = cli("predict", listing, "--backbone", tiny_clip, "--format", "json", "-o", out, "--map", tmp_path / "m.html")
    assert r.code == 0, r.err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert first["model"]["backbone"]["hash"] and first["model"]["head"] == "geoclip"
    assert len(first["candidates"]) == 5 and first["candidates"][0]["rank"] == 1
    assert abs(sum(c["probability"] for c in first["candidates"])) <= 1.0
    html = (tmp_path / "m.html").read_text()
    assert "Leaflet 1.9.4" in html and "FeatureCollection" in html
    assert "<script src" not in html and "<link" not in html  # everything inlined: no CDN, no tiles

    # resume: a half-written last line is dropped, finished images are skipped, the new one is added
    with open(out, "a") as fh:
        fh.write('{"image": "half')
    r = cli("predict", *photos, "--backbone", tiny_clip, "--format", "json", "-o", out, "--resume")
    assert r.code == 0, r.err
    assert "3 already done" in r.err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["image"] for x in lines) == sorted(str(p) for p in photos)

    r = cli("predict", photos[0], "--backbone", tiny_clip, "--format", "geojson", "--top-k", "2")
    assert r.code == 0
    gj = json.loads(r.out)
    points = [f for f in gj["features"] if f["geometry"]["type"] == "Point"]  # + the 90% region
    assert gj["type"] == "FeatureCollection" and len(points) == 2
    lon, lat = points[0]["geometry"]["coordinates"]
    assert -90 <= lat <= 90 and -180 <= lon <= 180

    r = cli("predict", photos[0], "--backbone", tiny_clip, "--format", "table", "--top-k", "1")
    assert r.code == 0 and photos[0].name in r.out


def test_geolocator_api_inputs(shared, tiny_clip: Path) -> None:  # type: ignore[no-untyped-def]
    from terraloc.pipeline import Geolocator, GeolocatorConfig

    geo = Geolocator(GeolocatorConfig(backbone=str(tiny_clip), places=False))
    p = sorted((shared / "data/photos/osv5m").glob("*.jpg"))[0]
    img = Image.open(p)
    preds = geo.predict([p, str(p), p.read_bytes(), img, np.asarray(img.convert("RGB")), b"junk"], top_k=2)
    assert [x.ok for x in preds] == [True] * 5 + [False]
    coords = {(round(x.top.lat, 5), round(x.top.lon, 5)) for x in preds[:5] if x.top}
    assert len(coords) == 1  # same photo, whatever the input type
    assert preds[5].image == "<bytes #5>" and "not an image" in (preds[5].error or "")
    [single] = geo.predict(p, top_k=1)
    assert len(single.candidates) == 1 and single.to_json()["lat"] == single.top.lat  # type: ignore[union-attr]


def _geotag(path: Path, lat: float, lon: float, color: tuple[int, int, int]) -> None:
    def dms(x: float) -> tuple[float, float, float]:
        x = abs(x)
        d = int(x)
        m = int((x - d) * 60)
        return (float(d), float(m), round((x - d - m / 60) * 3600, 4))

    exif = Image.Exif()
    gps = {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}
    exif[0x8825] = gps
    Image.new("RGB", (64, 64), color).save(path, "JPEG", exif=exif)


def test_refdb_build_from_exif_folder_and_mismatch(tmp_path: Path, cli, tiny_clip: Path) -> None:
    from terraloc.inputs import exif_gps
    from terraloc.search.refdb import ReferenceDatabase

    folder = tmp_path / "photos"
    folder.mkdir()
    _geotag(folder / "paris.jpg", 48.8566, 2.3522, (200, 50, 50))
    _geotag(folder / "rio.jpg", -22.9068, -43.1729, (50, 200, 50))
    _geotag(folder / "paris2.jpg", 48.86, 2.35, (190, 60, 50))
    Image.new("RGB", (64, 64), (1, 2, 3)).save(folder / "nogps.jpg")
    assert exif_gps(folder / "rio.jpg") == pytest.approx((-22.9068, -43.1729), abs=1e-3)
    out = tmp_path / "db"
    # a build stopped before its first part left an empty work folder: it starts over
    (out / ".work").mkdir(parents=True)
    r = cli("db", "build", "--images", folder, "--backbone", tiny_clip, "--out", out, "--shard-size", "2")
    assert r.code == 2, r.err  # a skipped photo: exit 2 like predict, the database is still built
    assert "skipped" in r.err and "nogps.jpg" in r.err and "no EXIF GPS" in r.err
    db = ReferenceDatabase.load(out)
    assert len(db) == 3 and set(db.table["country"]) == {"France", "Brazil"}
    assert (out / "skipped.csv").read_text().count("nogps.jpg") == 1
    assert not (out / ".work").exists()

    # query with the same backbone: Paris-coloured photo lands in France
    query = tmp_path / "q.jpg"
    Image.new("RGB", (64, 64), (198, 52, 50)).save(query)
    r = cli("predict", query, "--db", out, "--format", "json", "--top-k", "2")
    assert r.code == 0, r.err
    top = json.loads(r.out.splitlines()[0])
    assert top["model"]["head"] == "refdb" and len(top["candidates"]) >= 1

    # another backbone is refused with a clear error
    r = cli("predict", query, "--db", out, "--backbone", "efficientnet-lite0")
    assert r.code == 2 and "built with backbone" in r.err and "Traceback" not in r.err

    # a folder with no usable photo: one line, and the skipped list says why
    empty = tmp_path / "nogps"
    empty.mkdir()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(empty / "a.jpg")
    r = cli("db", "build", "--photos", empty, "--backbone", tiny_clip, "--out", tmp_path / "none")
    assert r.code == 2 and "skipped list written to" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert "a.jpg" in (tmp_path / "none" / "skipped.csv").read_text()


@pytest.mark.slow
def test_refdb_build_killed_then_resumed_equals_an_uninterrupted_build(
    shared: Path, tmp_path: Path, cli, tiny_clip: Path
) -> None:  # type: ignore[no-untyped-def]
    """`terraloc db build` SIGKILLed after its first part file, then run again: the same database."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from terraloc.search.refdb import ReferenceDatabase

    photos = shared / "data/photos/osv5m/osv5m_photos.csv"  # 71 photos: 18 parts of 4
    args = ["--photos", str(photos), "--backbone", str(tiny_clip), "--part-size", "4", "--batch-size", "4",
            "--workers", "1", "--no-progress"]  # fmt: skip
    whole = tmp_path / "whole"
    r = cli("db", "build", *args, "--out", whole)
    assert r.code == 0, r.err

    out = tmp_path / "killed"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "terraloc", "db", "build", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not list((out / ".work" / "parts").glob("part-*.parquet")):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.time() < deadline, "no part written in 180 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list((out / ".work" / "parts").glob("part-*.parquet")))
    assert not (out / "manifest.json").exists() and 1 <= finished < 18

    r = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["skipped"] >= 4 * finished and summary["skipped"] + summary["done"] == 71
    assert summary["parts_written"] == 18 - summary["skipped"] // 4
    a, b = ReferenceDatabase.load(whole), ReferenceDatabase.load(out)
    assert a.manifest == b.manifest
    pd.testing.assert_frame_equal(a.table, b.table)
    np.testing.assert_allclose(np.asarray(a.embeddings), np.asarray(b.embeddings), atol=1e-5)
    assert (whole / "skipped.csv").read_text() == (out / "skipped.csv").read_text()
    assert not (out / ".work").exists()


def test_refdb_head_consensus() -> None:
    from terraloc.search.refdb import ConsensusConfig, knn_consensus

    coords = np.array([[48.85, 2.35], [48.86, 2.34], [40.7, -74.0], [48.84, 2.36]])
    sims = np.array([0.9, 0.89, 0.92, 0.88], dtype=np.float32)
    locs, probs = knn_consensus(coords, sims, ConsensusConfig(k=4, temperature=0.05), top_k=2)
    assert probs.sum() == pytest.approx(1.0)
    assert abs(locs[0, 0] - 48.85) < 0.05  # three Paris neighbours outvote one closer New York


def test_places_offline() -> None:
    from terraloc.geo.places import reverse_geocode

    paris, nyc, sydney = reverse_geocode([[48.8566, 2.3522], [40.7128, -74.006], [-33.8688, 151.2093]])
    assert (paris.city, paris.country, paris.country_code) == ("Paris", "France", "FR")
    assert nyc.country == "United States" and nyc.admin1 == "New York"
    assert sydney.country == "Australia" and sydney.distance_km < 10


def test_models_list_offline(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path))
    r = cli("models", "list", "--json")
    assert r.code == 0
    rows = {x["name"]: x for x in json.loads(r.out)}
    assert rows["efficientnet-lite0"]["on_disk"] is True
    assert "clip-vit-large-patch14" in rows
    r = cli("models", "pull", "no-such-model")
    assert r.code == 2 and "unknown model" in r.err
