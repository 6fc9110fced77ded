"""Where the backbone runs: ``--device`` / ``Geolocator.to`` (auto, cpu, cuda, cuda:N).

On a machine without a GPU the GPU cases check the refusals; where a GPU is visible they check
that predictions on it match the CPU's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terraloc.device import resolve_device
from terraloc.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "data/reference/geoclip_predict/tiny_clip"
HAS_GPU = torch.cuda.is_available()


def test_device_names() -> None:
    assert resolve_device("auto") == ("cuda" if HAS_GPU else "cpu")
    assert resolve_device(" CPU ") == "cpu"
    assert resolve_device("auto", here=False) == "auto" and resolve_device("cuda:3", here=False) == "cuda:3"
    for bad in ("tpu", "cuda:x", "cuda:", "gpu0", ""):
        with pytest.raises(InputError, match="unknown device"):
            resolve_device(bad)
    if not HAS_GPU:
        with pytest.raises(InputError, match="no GPU is visible"):
            resolve_device("cuda")
    else:
        with pytest.raises(InputError, match="GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.fixture(scope="module")
def photos(shared: Path) -> list[Path]:
    return sorted((shared / "data/photos/osv5m").glob("*.jpg"))[:3]


def test_geolocator_to(shared: Path, photos: list[Path]) -> None:
    from terraloc.pipeline import Geolocator, GeolocatorConfig

    geo = Geolocator(GeolocatorConfig(backbone=str(shared / TINY), places=False))
    ref = geo.predict(photos, 3)
    assert geo.to("cpu") is geo and geo.device == "cpu"
    again = geo.predict(photos, 3)
    assert [[(c.lat, c.lon) for c in r.candidates] for r in ref] == [
        [(c.lat, c.lon) for c in r.candidates] for r in again
    ]
    if not HAS_GPU:
        with pytest.raises(InputError, match="no GPU is visible"):
            geo.to("cuda")
        assert geo.device == "cpu"  # unchanged by the refusal
        return
    on_gpu = geo.to("cuda").predict(photos, 3)
    assert next(geo.backbone.parameters()).device.type == "cuda"
    for a, b in zip(ref, on_gpu, strict=True):
        np.testing.assert_allclose(
            [c.probability for c in a.candidates], [c.probability for c in b.candidates], atol=1e-4
        )
    assert geo.with_config(distinct_km=0).device == "cuda"  # a derived geolocator stays on the GPU


@pytest.mark.parametrize("command", ["predict", "serve", "embed", "db"])
def test_bad_device_fails_in_one_line(command: str, shared: Path, photos: list[Path], cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = {
        "predict": [photos[0], "-o", tmp_path / "p.csv"],
        "serve": ["--port", "0"],
        "embed": ["--photos", photos[0].parent, "--no-coords", "-o", tmp_path / "p.csv"],
        "db": ["build", "--photos", photos[0].parent, "-o", tmp_path / "p.csv"],
    }[command]
    r = cli(command, *args, "--backbone", shared / TINY, "--device", "tpu")
    assert r.code == 2 and "unknown device 'tpu'" in r.err and "Traceback" not in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    if not HAS_GPU:
        r = cli(command, *args, "--backbone", shared / TINY, "--device", "cuda")
        assert r.code == 2 and "no GPU is visible" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not (tmp_path / "p.csv").exists()


def test_predict_on_the_cpu_device_through_both_engines(shared: Path, photos: list[Path], cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one, bulk = tmp_path / "one.csv", tmp_path / "bulk.csv"
    common = ["--backbone", shared / TINY, "--no-places", "--device", "cpu", "--top-k", "2"]
    assert cli("predict", *photos, *common, "-o", one).code == 0
    r = cli("predict", *photos, *common, "-o", bulk, "--engine", "local")
    assert r.code == 0, r.err
    assert [line.split(",")[:4] for line in one.read_text().splitlines()] == [
        line.split(",")[:4] for line in bulk.read_text().splitlines()
    ]
