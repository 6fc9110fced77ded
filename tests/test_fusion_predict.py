"""End to end: train fusion + GeoSURGE on shared photos with a tiny CLIP, then `terraloc predict --fusion`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest


@pytest.mark.slow
def test_fusion_train_then_predict_geosurge_end_to_end(shared: Path, tmp_path: Path, cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path / "home"))
    tiny = shared / "data" / "reference" / "geoclip_predict" / "tiny_clip"
    photos = shared / "data" / "photos" / "im2gps3k_dev"
    run = tmp_path / "run"
    r = cli("fusion", "train", "--backbone", str(tiny), "--limit", "10", "--epochs", "1", "--batch-size", "5",
            "--tau-max", "6,3", "--out", str(run))  # fmt: skip
    assert r.code == 0, r.err
    assert (run / "fusion.pt").is_file() and (run / "geosurge.pt").is_file()

    names = sorted(p.name for p in photos.glob("*.jpg"))[:2]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "preds.csv"
    args = [str(photos / n) for n in names] + [str(tmp_path / "broken.jpg")]
    r = cli("predict", *args, "--backbone", str(tiny), "--head", "geosurge", "--fusion", str(run / "fusion.pt"),
            "--top-k", "3", "-f", "csv", "-o", str(out), "--no-places")  # fmt: skip
    assert r.code == 2 and "broken.jpg" in r.err
    rows = list(csv.DictReader(out.open()))
    good = [row for row in rows if not row["error"]]
    assert {Path(row["image"]).name for row in good} == set(names)
    assert len(good) == 2 * 3
    for row in good:
        assert -90 <= float(row["lat"]) <= 90 and -180 <= float(row["lon"]) <= 180
        assert 0 <= float(row["probability"]) <= 1

    # the run's geosurge.pt scores fused features: as a plain geosurge head it is refused in one line
    r = cli("predict", str(photos / names[0]), "--backbone", str(tiny), "--checkpoint", str(run / "geosurge.pt"))
    assert r.code == 2 and "--fusion fusion.pt" in r.err and "Traceback" not in r.err

    # a fusion checkpoint without its GeoSURGE head: one-line error, exit 2
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "fusion.pt").write_bytes((run / "fusion.pt").read_bytes())
    r = cli("predict", str(photos / names[0]), "--backbone", str(tiny), "--fusion", str(lone / "fusion.pt"))
    assert r.code == 2 and "geosurge.pt" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_fusion_ablation_cli_runs(shared: Path, tmp_path: Path, cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path / "home"))
    r = cli("fusion", "ablation", "--limit", "10", "--epochs", "1", "--batch-size", "8", "--blocks", "0,1", "--json")
    assert r.code == 0, r.err
    import json

    res = json.loads(r.out)["results"]
    assert [x["blocks"] for x in res] == [0, 1]
    assert all(x["test_images"] == 2 and "accuracy" in x["eval"] for x in res)
    r = cli("fusion", "ablation", "--blocks", "x")
    assert r.code == 2 and "--blocks" in r.err
