"""Every head through every front end: the Python API, `terraloc predict --format json` and
`POST /v1/predict` on a real `terraloc serve` subprocess give the same top-k on the same real photo;
save_pretrained -> from_pretrained gives identical predictions; a changed weight file is refused.

Models (built once per module):
- geoclip: the shared tiny CLIP with GeoCLIP's real pretrained head and 100K gallery;
- refdb: a reference database of the 71 shared street-level photos on EfficientNet-Lite0;
- geosurge: `terraloc embed` (tiny CLIP) + a short `terraloc train geosurge` on those photos;
- geosurge+fusion: a short `terraloc fusion train` on 10 shared photos (tiny CLIP).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from terraloc.errors import InputError

pytestmark = pytest.mark.slow

HEADS = ["geoclip", "refdb", "geosurge", "geosurge+fusion", "refdb+rag"]  # refdb+rag: the head, then the rag stage
TOP_K = 3


@pytest.fixture(scope="module")
def tiny(shared: Path) -> Path:
    return shared / "data" / "reference" / "geoclip_predict" / "tiny_clip"


@pytest.fixture(scope="module")
def photo(shared: Path) -> Path:
    return sorted((shared / "data" / "photos" / "im2gps3k_dev").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose")


def _run_cli(*args: Any) -> tuple[int, str, str]:
    """`terraloc ARGS` in-process, capturing stdout/stderr (module fixtures cannot use capsys)."""
    import io

    from terraloc.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def models(shared: Path, tiny: Path, workdir: Path) -> dict[str, dict[str, Any]]:
    """Per head: the `terraloc predict/serve` options and the equivalent GeolocatorConfig fields."""
    from terraloc.engine import make_engine
    from terraloc.engine.refdb_build import build_refdb, geotagged_items

    osv = shared / "data" / "photos" / "osv5m" / "osv5m_photos.csv"
    db = workdir / "refdb"
    build_refdb(geotagged_items(osv), "efficientnet-lite0", db, make_engine("local", workers=2))

    code, _, err = _run_cli("embed", "--photos", osv, "--out", workdir / "shards", "--backbone", tiny,
                            "--batch-size", "16")  # fmt: skip
    assert code == 0, err
    code, _, err = _run_cli("train", "geosurge", "--train", workdir / "shards", "--out", workdir / "gs",
                            "--tau-max", "40,10", "--tau-min", "1", "--batch-size", "16", "--epochs", "2",
                            "--no-progress", "--no-tensorboard")  # fmt: skip
    assert code == 0, err
    code, _, err = _run_cli("fusion", "train", "--backbone", tiny, "--limit", "10", "--epochs", "1",
                            "--batch-size", "5", "--tau-max", "6,3", "--out", workdir / "fusion")  # fmt: skip
    assert code == 0, err
    ckpt, fusion = workdir / "gs" / "last.pt", workdir / "fusion" / "fusion.pt"
    return {
        "geoclip": {"args": ["--backbone", tiny], "config": {"backbone": str(tiny)}},
        "refdb": {"args": ["--db", db], "config": {"head": "refdb", "db": str(db), "backbone": "efficientnet-lite0"}},
        "geosurge": {
            "args": ["--backbone", tiny, "--checkpoint", ckpt],
            "config": {"head": "geosurge", "backbone": str(tiny), "checkpoint": str(ckpt)},
        },
        "geosurge+fusion": {
            "args": ["--backbone", tiny, "--fusion", fusion],
            "config": {"head": "geosurge+fusion", "backbone": str(tiny), "fusion": str(fusion)},
        },
        "refdb+rag": {
            "args": ["--db", db, "--reasoner", "rag"],
            "config": {"head": "refdb", "db": str(db), "backbone": "efficientnet-lite0", "reasoner": "rag"},
        },
    }


@pytest.fixture(scope="module")
def api_results(models: dict[str, dict[str, Any]], photo: Path) -> dict[str, dict[str, Any]]:
    """Per head: the Python API's result JSON for the photo (the reference for the other front ends)."""
    from terraloc import Geolocator, GeolocatorConfig

    out = {}
    for head, m in models.items():
        geo = Geolocator(GeolocatorConfig(**m["config"]))
        [pred] = geo.predict(photo, top_k=TOP_K)
        assert pred.ok, pred.error
        out[head] = pred.to_json()
    return out


@pytest.fixture(scope="module")
def servers(models: dict[str, dict[str, Any]]) -> Iterator[dict[str, str]]:
    """One real `terraloc serve` subprocess per head (started on first use, stopped at module end)."""
    from terraloc.serve.loadtest import server_process

    with contextlib.ExitStack() as stack:

        class Lazy(dict[str, str]):
            def __missing__(self, head: str) -> str:
                url, _ = stack.enter_context(server_process([str(a) for a in models[head]["args"]]))
                self[head] = url
                return url

        yield Lazy()


def _topk(rec: dict[str, Any]) -> list[tuple[float, float]]:
    return [(c["lat"], c["lon"]) for c in rec["candidates"]]


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["error"] is None and b["error"] is None
    # identical up to float rounding (float32 matmuls differ slightly with the batch size)
    assert len(_topk(a)) == len(_topk(b))
    for x, y in zip(_topk(a), _topk(b), strict=True):
        assert x == pytest.approx(y, abs=1e-7)
    pa, pb = ([c["probability"] for c in x["candidates"]] for x in (a, b))
    assert pa == pytest.approx(pb, rel=1e-5)
    assert [c["city"] for c in a["candidates"]] == [c["city"] for c in b["candidates"]]
    assert a["model"] == b["model"]


@pytest.mark.parametrize("surface", ["api", "cli", "serve"])
@pytest.mark.parametrize("head", HEADS)
def test_same_topk_on_every_surface(
    head: str, surface: str, models: dict[str, Any], api_results: dict[str, Any], servers: Any, photo: Path
) -> None:
    ref = api_results[head]
    assert ref["model"]["head"] == head.removesuffix("+rag") and 1 <= len(ref["candidates"]) <= TOP_K
    if head == "refdb+rag":
        assert ref["model"]["reasoner"]["name"] == "rag"
    if not head.startswith("refdb"):  # the consensus may find fewer clusters than k
        assert len(ref["candidates"]) == TOP_K
    if surface == "api":
        from PIL import Image

        from terraloc import Geolocator, GeolocatorConfig

        # any iterable: a generator of bytes, a PIL image and a path gives the same answer each time
        geo = Geolocator(GeolocatorConfig(**models[head]["config"]))
        gen = (x for x in (photo.read_bytes(), Image.open(photo), str(photo)))
        preds = geo.predict(gen, top_k=TOP_K)
        assert [p.image for p in preds] == ["<bytes #0>", "<image #1>", str(photo)]
        for p in preds:
            _same(p.to_json(), ref)
        assert preds[0].candidates[0].evidence  # the head says where each candidate came from
        return
    if surface == "cli":
        code, out, err = _run_cli("predict", photo, *models[head]["args"], "--format", "json", "--top-k", TOP_K)
        assert code == 0, err
        [line] = out.strip().splitlines()
        _same(json.loads(line), ref)
        return
    url = servers[head]
    r = httpx.post(
        f"{url}/v1/predict",
        params={"top_k": TOP_K},
        files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got) >= set(ref)  # the same JSON shape as `terraloc predict --format json`
    from terraloc.serve.public import public_paths

    _same(got, {**ref, "model": public_paths(ref["model"])})  # the service shows no absolute server path


@pytest.mark.parametrize("head", HEADS)
def test_save_pretrained_then_from_pretrained_is_identical(
    head: str, models: dict[str, Any], api_results: dict[str, Any], photo: Path, tmp_path: Path
) -> None:
    from terraloc import Geolocator, GeolocatorConfig

    geo = Geolocator(GeolocatorConfig(**models[head]["config"]))
    cfg_path = geo.save_pretrained(tmp_path / "saved")
    saved = json.loads(cfg_path.read_text())
    assert saved["format"] == "terraloc-geolocator" and saved["head"] == head.removesuffix("+rag")
    assert saved["backbone_hash"] == geo.backbone.weights_hash and saved["files"]
    assert all(Path(f["path"]).is_absolute() and len(f["sha256"]) == 16 for f in saved["files"].values())
    again = Geolocator.from_pretrained(tmp_path / "saved")
    [pred] = again.predict(photo, top_k=TOP_K)
    assert pred.to_json() == api_results[head]
    # the CLI takes the same folder
    code, out, err = _run_cli("predict", photo, "--model", tmp_path / "saved", "--format", "json", "--top-k", TOP_K)
    assert code == 0, err
    assert json.loads(out.strip()) == api_results[head] | {"image": str(photo)}


def test_changed_weight_file_is_refused(models: dict[str, Any], tiny: Path, tmp_path: Path, photo: Path) -> None:
    from terraloc import Geolocator, GeolocatorConfig

    # a GeoSURGE checkpoint rewritten after saving
    ckpt = tmp_path / "gs.pt"
    shutil.copy(models["geosurge"]["config"]["checkpoint"], ckpt)
    Geolocator(GeolocatorConfig(head="geosurge", backbone=str(tiny), checkpoint=str(ckpt))).save_pretrained(
        tmp_path / "m"
    )
    with open(ckpt, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(InputError, match=rf"{ckpt}: checkpoint file changed since the geolocator was saved"):
        Geolocator.from_pretrained(tmp_path / "m")
    code, _, err = _run_cli("predict", photo, "--model", tmp_path / "m")
    assert code == 2 and "checkpoint file changed" in err and str(ckpt) in err and "Traceback" not in err

    # the backbone's weights changed (same folder, other weights)
    import torch
    from transformers import CLIPModel

    bb = tmp_path / "clip"
    shutil.copytree(tiny, bb)
    Geolocator(GeolocatorConfig(backbone=str(bb), places=False)).save_pretrained(tmp_path / "g")
    model = CLIPModel.from_pretrained(bb)
    with torch.no_grad():
        model.visual_projection.weight.mul_(1.01)
    model.save_pretrained(bb)
    with pytest.raises(InputError, match="was saved with weights"):
        Geolocator.from_pretrained(tmp_path / "g")

    # a folder without config.json, and an unknown preset
    with pytest.raises(InputError, match="neither a saved geolocator folder"):
        Geolocator.from_pretrained("no-such-model")


def test_custom_gallery_from_a_coordinates_csv_end_to_end(
    tiny: Path, photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`terraloc gallery build --coords CSV` then `terraloc predict --gallery DIR` (flat and IVF)."""
    import numpy as np

    lats, lons = np.meshgrid(np.arange(42.5, 51.0, 0.5), np.arange(-4.5, 8.0, 0.5), indexing="ij")
    pts = {(round(float(a), 4), round(float(b), 4)) for a, b in zip(lats.ravel(), lons.ravel(), strict=True)}
    csv = tmp_path / "france.csv"
    csv.write_text("latitude,longitude\n" + "".join(f"{a},{b}\n" for a, b in sorted(pts)))
    gal = tmp_path / "france-gallery"
    code, _, err = _run_cli("gallery", "build", "--coords", csv, "--out", gal)
    assert code == 0, err
    results = {}
    for index in ("flat", "IVF16,Flat@nprobe=4"):
        code, out, err = _run_cli("predict", photo, "--backbone", tiny, "--gallery", gal, "--index", index,
                                  "--format", "json", "--top-k", "5", "--no-places")  # fmt: skip
        assert code == 0, err
        rec = json.loads(out.strip())
        assert rec["model"]["gallery"] == str(gal) and rec["model"]["gallery_size"] == len(pts)
        assert rec["model"]["index"] == index
        got = [(round(c["lat"], 4), round(c["lon"], 4)) for c in rec["candidates"]]
        assert len(got) == 5 and set(got) <= pts  # every candidate is a point of the CSV
        results[index] = rec
    flat, ivf = results["flat"], results["IVF16,Flat@nprobe=4"]
    assert 0 < sum(c["probability"] for c in flat["candidates"]) <= 1
    # IVF probabilities are a softmax over the retrieved shortlist: never below the full-gallery ones
    if _topk(flat)[0] == _topk(ivf)[0]:
        assert ivf["candidates"][0]["probability"] >= flat["candidates"][0]["probability"] - 1e-12
    assert list((gal / "indexes").glob("IVF16_Flat-*.faiss"))  # built once, cached with the gallery
    # ten-crop through an approximate index: every crop searches, logits averaged over the union
    code, out, err = _run_cli("predict", photo, "--backbone", tiny, "--gallery", gal, "--index", "IVF16,Flat@nprobe=4",
                              "--ten-crop", "--format", "json", "--top-k", "5", "--no-places")  # fmt: skip
    assert code == 0, err
    rec = json.loads(out.strip())
    assert rec["model"]["ten_crop"] is True
    assert {(round(c["lat"], 4), round(c["lon"], 4)) for c in rec["candidates"]} <= pts

    # flat search streamed in blocks (galleries too large for memory) equals the in-memory softmax
    from terraloc import Geolocator
    from terraloc.models import geoclip

    geo = Geolocator(backbone=str(tiny), gallery=str(gal), places=False)
    [whole] = geo.predict(photo, top_k=5)
    monkeypatch.setattr(geoclip, "FLAT_IN_MEMORY_MB", 0)
    monkeypatch.setattr(geoclip, "_FLAT_BLOCK_ROWS", 97)  # several blocks, the last one short
    blocked = geo.with_config()
    assert blocked.head._blocked
    [streamed] = blocked.predict(photo, top_k=5)
    assert [(c.lat, c.lon) for c in streamed.candidates] == [(c.lat, c.lon) for c in whole.candidates]
    assert [c.probability for c in streamed.candidates] == pytest.approx([c.probability for c in whole.candidates])

    # an unknown gallery is named, with the command that builds one
    code, _, err = _run_cli("predict", photo, "--backbone", tiny, "--gallery", tmp_path / "nope")
    assert code == 2 and "unknown gallery" in err and "terraloc gallery build" in err
