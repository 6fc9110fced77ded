"""Defaults that work (issue 16): embed's backbone, GeoSURGE thresholds on small data, db build's
skipped list and manifest hint, eval's benchmark match rule and --subset, progress reports, and
third-party INFO noise."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from terraloc.geo.s2partition import GEOSURGE_TAU_MAX, scale_taus

PREDS = Path("data") / "predictions" / "geoestimation_isns_im2gps3k.csv"


def _tiny(shared: Path) -> Path:
    return shared / "data" / "reference" / "geoclip_predict" / "tiny_clip"


# --------------------------------------------------------------------------- embed


def test_embed_defaults_to_predicts_backbone() -> None:
    import typer.main

    from terraloc.cli.app import _register, app
    from terraloc.pipeline import GeolocatorConfig

    _register()
    embed = typer.main.get_command(app).commands["embed"]  # type: ignore[attr-defined]
    default = next(p.default for p in embed.params if p.name == "backbone")
    assert default == GeolocatorConfig().backbone


def test_embed_and_db_build_accept_the_same_manifest(shared: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from terraloc.search.refdb import ReferenceDatabase
    from terraloc.train.shards import ShardSet

    meta = pd.read_csv(shared / "data" / "photos" / "im2gps3k_dev" / "metadata.csv").head(4)
    manifest = tmp_path / "photos.csv"  # the IMG_ID,LAT,LON form, photos elsewhere (absolute paths)
    meta.assign(IMG_ID=[str(shared / "data" / "photos" / "im2gps3k_dev" / i) for i in meta["IMG_ID"]])[
        ["IMG_ID", "LAT", "LON"]
    ].to_csv(manifest, index=False)
    r = cli("embed", "--photos", manifest, "-o", tmp_path / "shards", "--backbone", _tiny(shared))
    assert r.code == 0, r.err
    assert ShardSet(tmp_path / "shards").n_rows == 4
    r = cli("db", "build", "--photos", manifest, "-o", tmp_path / "db", "--backbone", _tiny(shared))
    assert r.code == 0, r.err
    db = ReferenceDatabase.load(tmp_path / "db")
    np.testing.assert_allclose(np.sort(db.coords[:, 0]), np.sort(meta["LAT"].to_numpy()))


# --------------------------------------------------------------------------- GeoSURGE thresholds


def test_scaled_thresholds_stay_distinct_on_small_data() -> None:
    for n in (10, 300, 3_000, 30_000, 100_000):
        tmax, tmin = scale_taus(n)
        assert len(tmax) >= 1 and all(b < a for a, b in itertools.pairwise(tmax)), (n, tmax)
        assert min(tmax) > tmin >= 1
    assert len(scale_taus(300)[0]) < len(GEOSURGE_TAU_MAX) == len(scale_taus(100_000)[0])


def test_train_geosurge_with_default_thresholds_on_300_photos(shared: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from terraloc.train.shards import write_shards

    ll = pd.read_csv(shared / "data" / "photos" / "im2gps3k_dev" / "metadata.csv")[["LAT", "LON"]].to_numpy()
    assert len(ll) == 300
    emb = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    write_shards([([f"p{i}" for i in range(300)], ll, emb)], tmp_path / "shards", 8)
    args = ["train", "geosurge", "--train", tmp_path / "shards", "--out", tmp_path / "run", "--epochs", "1",
            "--batch-size", "64", "--no-progress", "--no-tensorboard"]  # fmt: skip
    r = cli(*args)
    assert r.code == 0, r.err
    assert "scaled to 300 photos" in r.err and (tmp_path / "run" / "last.pt").exists()
    # thresholds the user gives that are not distinct: one line naming --tau-max
    r = cli(*args[:5], tmp_path / "run2", *args[6:], "--tau-max", "2,2", "--tau-min", "1")
    assert r.code == 2 and "--tau-max" in r.err and len(r.err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- db build


def test_db_build_folder_without_gps_writes_skipped_list_and_names_the_manifest(
    shared: Path, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (i * 40, 10, 10)).save(photos / f"p{i}.jpg")
    (photos / "metadata.csv").write_text("IMG_ID,LAT,LON\np0.jpg,1,2\np1.jpg,3,4\np2.jpg,5,6\n")
    out = tmp_path / "db"
    r = cli("db", "build", "--photos", photos, "-o", out, "--backbone", _tiny(shared))
    assert r.code == 2 and "Traceback" not in r.err
    err = r.err.strip()
    assert len(err.splitlines()) == 1 and f"--photos {photos / 'metadata.csv'}" in err
    assert "3 no EXIF GPS position" in err and str(out / "skipped.csv") in err
    skipped = pd.read_csv(out / "skipped.csv")
    assert set(skipped["reason"]) >= {"no EXIF GPS position"} and len(skipped) == 4  # 3 photos + the CSV
    # the suggestion works
    r = cli("db", "build", "--photos", photos / "metadata.csv", "-o", tmp_path / "db2", "--backbone", _tiny(shared))
    assert r.code == 0, r.err


# --------------------------------------------------------------------------- eval


def test_eval_refuses_predictions_for_another_benchmark(shared: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("eval", "--predictions", shared / PREDS, "--benchmark", "yfcc4k")
    assert r.code == 2 and "Traceback" not in r.err
    assert "0 of 2997 predicted images (0.0%) are images of yfcc4k" in r.err
    assert "use --benchmark im2gps3k" in r.err and len(r.err.strip().splitlines()) == 1


def test_eval_scores_a_subset_against_all_or_only_the_subset(shared: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    ids = pd.read_csv(shared / "data" / "photos" / "im2gps3k_dev" / "metadata.csv")["IMG_ID"]
    gt = pd.read_csv(shared / "data" / "benchmarks" / "im2gps3k_places365.csv").set_index("IMG_ID")
    preds = tmp_path / "p.csv"  # perfect predictions for the 300 shared photos
    pd.DataFrame({"image": ids, "lat": gt.loc[ids, "LAT"].to_numpy(), "lon": gt.loc[ids, "LON"].to_numpy()}).to_csv(
        preds, index=False
    )
    r = cli("eval", "-p", preds, "-b", "im2gps3k", "--json", "--bootstrap", "10")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["n"] == 2997 and res["subset"] is False and res["accuracy"]["1"] == pytest.approx(10.0, abs=0.1)
    assert "coverage 10.0%" in r.err and "--subset" in r.err
    r = cli("eval", "-p", preds, "-b", "im2gps3k", "--json", "--subset", "--bootstrap", "10")
    res = json.loads(r.out)
    assert r.code == 0 and res["n"] == 300 and res["accuracy"]["1"] == 100.0 and res["subset"] is True
    assert res["benchmark_images"] == 2997 and "coverage" not in r.err
    # a custom ground truth that shares no image: refused with a hint about the id column
    other = tmp_path / "gt.csv"
    other.write_text("photo,Lat,Lon\nzzz.jpg,1,2\n")
    mine = tmp_path / "mine.csv"
    mine.write_text("image,lat,lon\nholiday_001.jpg,1,2\n")
    r = cli("eval", "-p", mine, "--ground-truth", other)
    assert r.code == 2 and "--id-col" in r.err
    r = cli("eval", "-p", preds, "--ground-truth", other)  # these are im2gps3k's images: it says so
    assert r.code == 2 and "use --benchmark im2gps3k" in r.err


# --------------------------------------------------------------------------- progress and noise


def test_progress_reports_are_drawn_and_never_clash_with_a_live_display() -> None:
    from rich.console import Console
    from rich.progress import Progress

    from terraloc.cli.progress_view import RichReporter

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    rep = RichReporter(console)
    rep("building the GeoCLIP gallery cache (first use only)", 0, 100)
    rep("building the GeoCLIP gallery cache (first use only)", 50, 100)
    assert "building the GeoCLIP gallery cache" in buf.getvalue()
    rep("building the GeoCLIP gallery cache (first use only)", 100, 100)  # finished: the display stops
    assert rep._progress is None
    with Progress(console=console):  # a command's own bar is live (predict): no LiveError either way
        rep("building the hierarchical search index", 0, None)
        assert "building the hierarchical search index" in buf.getvalue()
        rep("building the hierarchical search index", -1, None)
    assert rep._progress is None


def test_library_reports_index_builds(tmp_path: Path) -> None:
    from terraloc import progress
    from terraloc.search.gallery import Gallery

    seen: list[tuple[str, int, int | None]] = []
    previous = progress.set_reporter(lambda w, d, t: seen.append((w, d, t)))
    try:
        rng = np.random.default_rng(0)
        emb = rng.normal(size=(64, 8)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        gal = Gallery(coords=rng.uniform(-50, 50, (64, 2)), embeddings=emb, manifest={}, path=tmp_path)
        gal.index("IVF4,Flat", cache=False)
    finally:
        progress.set_reporter(previous)
    assert seen[0] == ("building the IVF4,Flat search index", 0, None) and seen[-1][1] == -1


def test_segment_prints_no_tflite_info_lines(shared: Path, tmp_path: Path) -> None:
    photo = shared / "data" / "photos" / "osv5m" / "1105240373293389.jpg"
    r = subprocess.run(
        [sys.executable, "-m", "terraloc", "segment", str(photo), "-o", str(tmp_path), "--no-cache", "--no-preview"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "INFO" not in r.stderr and "segmented 1 of 1" in r.stdout
