"""GPS galleries on disk: round trip, memory mapping, refusal of bad or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from terraloc.encoders import load_location_encoder
from terraloc.encoders.location import LocationEncoder
from terraloc.errors import InputError, MissingResourceError
from terraloc.search.gallery import Gallery, build_gallery, read_coords_file


@pytest.fixture(scope="module")
def encoder() -> LocationEncoder:
    return load_location_encoder("geoclip")


@pytest.fixture(scope="module")
def coords() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.uniform(-60, 70, 300), rng.uniform(-180, 180, 300)], axis=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, encoder: LocationEncoder, coords: np.ndarray) -> Path:
    out = tmp_path_factory.mktemp("g") / "gal"
    build_gallery(coords, encoder, out, dtype="float16", chunk_rows=128)
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_round_trip_memory_mapped(built: Path, encoder: LocationEncoder, coords: np.ndarray) -> None:
    g = Gallery.load(built, encoder)
    assert len(g) == 300 and g.dim == 512
    assert isinstance(g.embeddings, np.memmap) and g.embeddings.dtype == np.float16
    np.testing.assert_array_equal(g.coords, coords)
    m = g.manifest
    assert m["encoder_id"] == encoder.encoder_id and m["weights_hash"] == encoder.weights_hash
    assert (m["count"], m["dim"], m["dtype"]) == (300, 512, "float16") and m["created"].endswith("Z")
    # The stored rows are the encoder's normalised embeddings (to float16 rounding).
    want = encoder.encode(torch.from_numpy(coords[:5].astype(np.float32))).numpy()
    np.testing.assert_allclose(np.asarray(g.embeddings[:5], dtype=np.float32), want, atol=2e-3)
    assert not (built.parent / "gal.partial").exists()


def test_refuses_other_encoder(built: Path) -> None:
    other = LocationEncoder()
    other.encoder_id, other.weights_hash = "geoclip-location-v1", "0123456789abcdef"
    with pytest.raises(InputError, match="weights 0123456789abcdef"):
        Gallery.load(built, other)


def test_refuses_missing_manifest(built: Path, tmp_path: Path) -> None:
    g = _copy(built, tmp_path / "g")
    (g / "manifest.json").unlink()
    with pytest.raises(MissingResourceError, match="manifest missing"):
        Gallery.load(g)


def test_refuses_truncated_embeddings(built: Path, tmp_path: Path) -> None:
    g = _copy(built, tmp_path / "g")
    data = (g / "embeddings.npy").read_bytes()
    (g / "embeddings.npy").write_bytes(data[:-1000])
    with pytest.raises(InputError, match="truncated"):
        Gallery.load(g)


def test_refuses_foreign_embeddings(built: Path, tmp_path: Path) -> None:
    g = _copy(built, tmp_path / "g")
    (g / "embeddings.npy").write_bytes(b"not numpy at all" * 100)
    with pytest.raises(InputError, match="not a NumPy"):
        Gallery.load(g)
    np.save(g / "embeddings.npy", np.zeros((300, 256), np.float16))
    with pytest.raises(InputError, match=r"shape \(300, 256\)"):
        Gallery.load(g)
    np.save(g / "embeddings.npy", np.full((300, 512), 0.5, np.float16))
    with pytest.raises(InputError, match="not L2-normalised"):
        Gallery.load(g)


def test_refuses_bad_manifest(built: Path, tmp_path: Path) -> None:
    g = _copy(built, tmp_path / "g")
    m = json.loads((g / "manifest.json").read_text())
    (g / "manifest.json").write_text(json.dumps({**m, "count": 301}))
    with pytest.raises(InputError, match="manifest says"):
        Gallery.load(g)
    (g / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Gallery.load(g)


def test_interrupted_build_never_loads_and_resumes(
    tmp_path: Path, encoder: LocationEncoder, coords: np.ndarray
) -> None:
    out = tmp_path / "gal"
    calls = []

    def stop_after_first_chunk(done: int, total: int) -> None:
        calls.append(done)
        if done == 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_gallery(coords, encoder, out, chunk_rows=100, progress=stop_after_first_chunk)
    assert not out.exists() and (tmp_path / "gal.partial").exists()
    with pytest.raises(MissingResourceError, match="interrupted build"):
        Gallery.load(out)
    seen: list[int] = []
    g = build_gallery(coords, encoder, out, chunk_rows=100, progress=lambda d, t: seen.append(d))
    assert seen[0] == 100  # resumed after the recorded chunk
    ref = encoder.encode(torch.from_numpy(coords.astype(np.float32))).numpy()
    np.testing.assert_allclose(np.asarray(g.embeddings), ref, atol=1e-6)
    with pytest.raises(InputError, match="already exists"):
        build_gallery(coords, encoder, out)


def test_read_coords_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.csv"
    f.write_text("LAT,LON\n10,20\n95,0\n")
    with pytest.raises(InputError, match=r"c.csv, line 3, field 'lat'"):
        read_coords_file(f)
    f.write_text("x,y\n1,2\n")
    with pytest.raises(InputError, match="missing column 'lat'"):
        read_coords_file(f)
    f.write_text("lat,lon\n10,20\n-5.5,170\n")
    np.testing.assert_array_equal(read_coords_file(f), [[10, 20], [-5.5, 170]])


def test_cli_build_and_info(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "c.csv"
    f.write_text("lat,lon\n" + "".join(f"{i - 40},{3 * i - 100}\n" for i in range(60)))
    r = cli("gallery", "build", "--coords", f, "--out", tmp_path / "g", "--dtype", "float16", "--json")
    assert r.code == 0, r.err
    obj = json.loads(r.out)
    assert obj["count"] == 60 and obj["dtype"] == "float16"
    r = cli("gallery", "info", tmp_path / "g", "--json")
    assert r.code == 0 and json.loads(r.out)["count"] == 60
    f.write_text("lat,lon\n10,nan\n")
    r = cli("gallery", "build", "--coords", f, "--out", tmp_path / "g2")
    assert r.code == 2 and "line 2" in r.err and "Traceback" not in r.err
    r = cli("gallery", "info", tmp_path / "missing")
    assert r.code == 2 and r.err.startswith("error:")


def test_gallery_index_saved_and_reloaded(built: Path, tmp_path: Path) -> None:
    g = Gallery.load(_copy(built, tmp_path / "g"))
    q = np.asarray(g.embeddings[:20], dtype=np.float32)
    h = g.index("hierarchical", top=8, branching=4, beam=3)
    saved = list((g.path / "indexes").iterdir())
    assert len(saved) == 1 and saved[0].suffix == ".npz"
    again = Gallery.load(g.path).index("hierarchical", top=8, branching=4, beam=3)
    np.testing.assert_array_equal(again.search(q, 2).indices, h.search(q, 2).indices)
    # Search-time options re-use the saved tree; a build option makes a new one.
    Gallery.load(g.path).index("hierarchical", top=8, branching=4, beam=5, leaf_beam=2)
    assert len(list((g.path / "indexes").iterdir())) == 1
    Gallery.load(g.path).index("hierarchical", top=6, branching=4, beam=3)
    assert len(list((g.path / "indexes").iterdir())) == 2
    assert (h.search(q, 1).indices[:, 0] == np.arange(20)).mean() >= 0.9
    assert g.index("flat").search(q, 1).indices[:, 0].tolist() == list(range(20))
