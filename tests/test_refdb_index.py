"""The reference database searches through the same SearchIndex as galleries (flat, FAISS, hierarchical)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from terraloc.errors import InputError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP with 32-d embeddings (a folder: the builder's workers load it)."""
    from terraloc.encoders.image import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", projection_dim=32)


@pytest.fixture(scope="module")
def backbone(tiny: Path):  # type: ignore[no-untyped-def]
    from terraloc.encoders.image import load_backbone

    return load_backbone(tiny)


def _build(photos: Path, tiny: Path, out: Path, **kw):  # type: ignore[no-untyped-def]
    from terraloc.engine import build_refdb, geotagged_items, make_engine

    return build_refdb(geotagged_items(photos), str(tiny), out, make_engine("local", workers=1), **kw)


@pytest.mark.slow
def test_ivf_database_and_legacy_faiss_database(shared: Path, tmp_path: Path, tiny: Path, backbone) -> None:  # type: ignore[no-untyped-def]
    import faiss

    from terraloc.search.index import FaissIndex, FlatIndex
    from terraloc.search.refdb import ReferenceDatabase

    photos = shared / "data" / "photos" / "osv5m" / "osv5m_photos.csv"
    seen: list[tuple[int, int]] = []
    _build(photos, tiny, tmp_path / "flat", places=False, on_progress=lambda p: seen.append((p.done, p.total)))
    assert seen and seen[-1] == (71, 71)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    flat = ReferenceDatabase.load(tmp_path / "flat", backbone=backbone)
    assert isinstance(flat.index, FlatIndex) and flat.manifest["index"] == {"spec": "flat", "options": {}}
    assert list(flat.table.columns) == ["id", "path", "lat", "lon"]  # places=False: no place columns
    q = np.asarray(flat.embeddings[:5], dtype=np.float32)
    s_flat, i_flat = flat.search(q, 4)
    assert (i_flat[:, 0] == np.arange(5)).all() and np.allclose(s_flat[:, 0], 1.0, atol=1e-5)

    # IVF with every list probed is exact; the index is built at build time and cached in indexes/
    _build(photos, tiny, tmp_path / "ivf", places=False, index="IVF2,Flat@nprobe=2")
    ivf = ReferenceDatabase.load(tmp_path / "ivf")
    assert isinstance(ivf.index, FaissIndex) and ivf.index.spec == "IVF2,Flat"
    assert len(list((tmp_path / "ivf" / "indexes").glob("*.faiss"))) == 1
    s_ivf, i_ivf = ivf.search(q, 4)
    np.testing.assert_array_equal(i_ivf, i_flat)
    np.testing.assert_allclose(s_ivf, s_flat, atol=1e-5)
    fs, fi = ivf.farthest(q, 3)
    fs_flat, fi_flat = flat.farthest(q, 3)
    np.testing.assert_allclose(fs, fs_flat, atol=1e-5)
    np.testing.assert_array_equal(fi, fi_flat)
    assert (fs[:, 0] < s_flat[:, -1]).all()
    # the stored spec can be overridden at load time (flat search over an IVF-built database)
    assert isinstance(ReferenceDatabase.load(tmp_path / "ivf", index="flat").index, FlatIndex)

    # a database written before embeddings.npy (index.faiss only) loads and searches the same
    legacy = tmp_path / "flat"
    raw = faiss.IndexFlatIP(backbone.dim)
    raw.add(np.load(legacy / "embeddings.npy"))
    faiss.write_index(raw, str(legacy / "index.faiss"))
    (legacy / "embeddings.npy").unlink()
    old = ReferenceDatabase.load(legacy, backbone=backbone)
    s_old, i_old = old.search(q, 4)
    np.testing.assert_array_equal(i_old, i_flat)
    np.testing.assert_allclose(s_old, s_flat, atol=1e-5)


def test_bad_index_spec_is_refused_before_embedding(tmp_path: Path) -> None:
    from terraloc.engine import WorkItems, build_refdb, make_engine

    # photos and backbone that do not exist: never opened, the spec is checked first
    items = WorkItems(["a"], [str(tmp_path / "nowhere.jpg")], np.zeros((1, 2)))
    eng = make_engine("local")
    with pytest.raises(InputError, match="not a valid FAISS factory string 'IVF2,Bogus': could not parse"):
        build_refdb(items, "no-such-backbone", tmp_path / "db", eng, index="IVF2,Bogus")
    with pytest.raises(InputError, match=r"unknown hierarchical index option\(s\) topp; known: beam, branching"):
        build_refdb(items, "no-such-backbone", tmp_path / "db", eng, index="hierarchical@topp=3")
    with pytest.raises(InputError, match=r"unknown flat index option\(s\) rows; known: block_rows"):
        build_refdb(items, "no-such-backbone", tmp_path / "db", eng, index="flat@rows=3")
    assert not (tmp_path / "db").exists()


def test_index_that_does_not_fit_the_width_keeps_the_embeddings(tmp_path: Path, tiny: Path) -> None:
    """PQ7 is a valid factory string but 32-d embeddings do not split into 7: refused after embedding,
    with the embeddings kept, so the run with another index embeds nothing again."""
    from PIL import Image

    from terraloc.engine import WorkItems, build_refdb, make_engine
    from terraloc.search.refdb import ReferenceDatabase

    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"p{i}.png"))
        Image.new("RGB", (40, 30), (40 * i, 255 - 30 * i, 90)).save(paths[-1])
    coords = np.array([[10.0 * i, 20.0 * i] for i in range(6)])
    items = WorkItems([f"p{i}" for i in range(6)], paths, coords)
    eng = make_engine("local")
    out = tmp_path / "db"
    with pytest.raises(InputError, match=r"'IVF2,PQ7' does not fit 32-d embeddings: .*multiple.*kept in") as exc:
        build_refdb(items, str(tiny), out, eng, index="IVF2,PQ7", places=False)
    assert len(str(exc.value).splitlines()) == 1 and not (out / "manifest.json").exists()
    res = build_refdb(items, str(tiny), out, eng, index="IVF2,Flat@nprobe=2", places=False)
    assert (res["summary"].skipped, res["summary"].parts_written, res["n"]) == (6, 0, 6)
    db = ReferenceDatabase.load(out)
    np.testing.assert_allclose(db.coords, coords)
    assert db.search(np.asarray(db.embeddings), 1)[1][:, 0].tolist() == list(range(6))


def test_no_usable_photo_writes_the_skipped_list(tmp_path: Path) -> None:
    from terraloc.engine import WorkItems, build_refdb, make_engine

    items = WorkItems([], [], np.zeros((0, 2)), skipped=[("a.jpg", "no EXIF GPS"), ("b.txt", "not an image")])
    with pytest.raises(InputError, match=r"no usable photo \(2 skipped\); skipped list written to") as exc:
        build_refdb(items, "no-such-backbone", tmp_path / "db", make_engine("local"))
    assert len(str(exc.value).splitlines()) == 1
    assert (tmp_path / "db" / "skipped.csv").read_text().splitlines() == [
        "path,reason",
        "a.jpg,no EXIF GPS",
        "b.txt,not an image",
    ]


@pytest.mark.slow
def test_db_build_index_option_and_predict(shared: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from terraloc.encoders.image import make_tiny_clip
    from terraloc.search.refdb import ReferenceDatabase

    tiny = make_tiny_clip(tmp_path / "tiny")
    photos = shared / "data" / "photos" / "osv5m" / "osv5m_photos.csv"
    r = cli(
        "db", "build", "--photos", photos, "--backbone", tiny, "--out", tmp_path / "db", "--index", "IVF2,Flat@nprobe=2"
    )
    assert r.code == 0, r.err
    db = ReferenceDatabase.load(tmp_path / "db")
    assert db.manifest["index"] == {"spec": "IVF2,Flat", "options": {"params": "nprobe=2"}}
    photo = shared / "data" / "photos" / "osv5m" / "1105240373293389.jpg"
    r = cli("predict", photo, "--db", tmp_path / "db", "--format", "json", "--top-k", "2", "--no-places")
    assert r.code == 0, r.err
    # the query photo is in the database: its own location comes first
    assert json.loads(r.out.strip().splitlines()[0])["candidates"][0]["lat"] == pytest.approx(-31.98768, abs=1e-3)
    r = cli("db", "build", "--photos", photos, "--backbone", tiny, "--out", tmp_path / "db2", "--index", "IVF2,Bogus")
    assert r.code == 2 and "FAISS factory string" in r.err and len(r.err.strip().splitlines()) == 1
