"""``terraloc eval``: reproduction of published numbers, reports, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image


@pytest.mark.parametrize(
    ("file", "benchmark", "published"),
    [
        ("geoestimation_isns_im2gps3k.csv", "im2gps3k", [10.5, 28.0, 36.6, 49.7, 66.0]),
        ("geoestimation_isns_im2gps.csv", "im2gps", [16.9, 43.0, 51.9, 66.7, 80.2]),
        ("geoestimation_base_im2gps3k.csv", "im2gps3k", [8.2, 25.5, 35.1, 48.7, 65.2]),
    ],
)
def test_reproduces_published_geoestimation(cli, shared, file: str, benchmark: str, published: list[float]) -> None:  # type: ignore[no-untyped-def]
    r = cli("eval", "--predictions", shared / "data/predictions" / file, "--benchmark", benchmark, "--json")
    assert r.code == 0, r.err
    obj = json.loads(r.out)
    got = [obj["accuracy"][k] for k in ("1", "25", "200", "750", "2500")]
    for g, p in zip(got, published, strict=True):
        assert abs(g - p) <= 0.1 + 1e-9, (got, published)
    assert obj["coverage"] == 100.0
    assert set(obj) >= {"n", "coverage", "accuracy", "median_km", "mean_km", "geoscore"}
    # The file's own published fractions are parsed and reported beside the recomputed figures.
    assert obj["published"]["1"] == pytest.approx(published[0], abs=0.1)


def test_table_output_and_compare(cli, shared) -> None:  # type: ignore[no-untyped-def]
    r = cli("eval", "-p", shared / "data/predictions/geoestimation_isns_im2gps3k.csv", "-b", "im2gps3k", "--compare")
    assert r.code == 0, r.err
    assert "this run" in r.out and "10.5" in r.out
    assert "GeoCLIP" in r.out and "G3" in r.out


def test_out_writes_report_and_real_pngs(cli, shared, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "rep"
    r = cli("eval", "-p", shared / "data/predictions/geoestimation_isns_im2gps.csv", "-b", "im2gps", "--out", out)
    assert r.code == 0, r.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 237
    assert "| this run |" in (out / "report.md").read_text()
    for name in ("error_cdf.png", "error_map.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"
            assert im.width > 500 and im.height > 300
            # A real plot has many colours, not a blank canvas.
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


def test_partial_predictions_report_coverage(cli, shared, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "part.csv"
    f.write_text(
        "image,lat,lon\n"
        "104123223_7410c654ba_19_19355699@N00.jpg,-16.663606,145.563537\n"
        "1095548455_f636d22cbb_1277_8576809@N08,31.893581,-85.141124\n"
        "not_in_benchmark.jpg,0,0\n"
    )
    r = cli("eval", "-p", f, "-b", "im2gps", "--json")
    assert r.code == 0, r.err
    obj = json.loads(r.out)
    assert obj["n"] == 237 and obj["n_predicted"] == 2
    assert obj["coverage"] == pytest.approx(round(200 / 237, 1))
    assert obj["accuracy"]["1"] == pytest.approx(round(200 / 237, 1))
    assert obj["extra_predictions"] == 1


def test_custom_ground_truth_columns(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gt = tmp_path / "gt.csv"
    gt.write_text("photo,y,x\na.jpg,0,0\nb.jpg,10,10\n")
    pr = tmp_path / "p.csv"
    pr.write_text("image,lat,lon\na.jpg,0,0.005\nb.jpg,-10,-10\n")
    r = cli("eval", "-p", pr, "--ground-truth", gt, "--id-col", "photo", "--lat-col", "y", "--lon-col", "x", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["accuracy"]["1"] == 50.0


BAD_CASES = [
    # (file contents or None for missing, expected fragment, expected line)
    (None, "file not found", None),
    ("", "file is empty", None),
    ("image,lat,lon\n", "no prediction rows", None),
    ("img,latitude,longitude\na,1,2\n", "unrecognised predictions format", None),
    ("image,lat,lon\na.jpg,1,2\nb.jpg,north,2\n", "'north' is not a number", 3),
    ("image,lat,lon\na.jpg,1,2\nb.jpg,95,2\n", "outside [-90, 90]", 3),
    ("image,lat,lon\na.jpg,1,2\nb.jpg,5,-181\n", "outside [-180, 180]", 3),
    ("image,lat,lon\na.jpg,1,2\nb.jpg,3,4\na.jpg,5,6\n", "duplicate prediction", 4),
    ("image,lat,lon\na.jpg,1,\n", "is empty while the other coordinate is set", 2),
    ("image,lat,lon\na.jpg,nan,2\n", "not a finite number", 2),
]


@pytest.mark.parametrize(("content", "fragment", "line"), BAD_CASES)
def test_bad_prediction_files_give_one_line_errors(cli, shared, tmp_path, content, fragment, line) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "preds.csv"
    if content is not None:
        f.write_text(content)
    r = cli("eval", "-p", f, "-b", "im2gps")
    assert r.code == 2
    err = r.err.strip()
    assert len(err.splitlines()) == 1, err
    assert fragment in err and "preds.csv" in err
    if line is not None:
        assert f"line {line}" in err
    assert "Traceback" not in err


def test_bad_ground_truth_duplicate_and_unknown_benchmark(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gt = tmp_path / "gt.csv"
    gt.write_text("image,lat,lon\na.jpg,0,0\nb.jpg,1,1\na,2,2\n")
    pr = tmp_path / "p.csv"
    pr.write_text("image,lat,lon\na.jpg,0,0\n")
    r = cli("eval", "-p", pr, "--ground-truth", gt)
    assert r.code == 2 and "duplicate image id" in r.err and "line 4" in r.err
    r = cli("eval", "-p", pr, "-b", "nosuch")
    assert r.code == 2 and "unknown benchmark 'nosuch'" in r.err
    # column names match case-insensitively (LAT finds lat); a column that is not there is named
    r = cli("eval", "-p", pr, "--ground-truth", gt, "--lat-col", "breite")
    assert r.code == 2 and "missing column(s) breite" in r.err


def test_console_script_exit_status_without_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "terraloc", "eval", "-p", str(missing), "-b", "im2gps3k"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "nope.csv" in proc.stderr
