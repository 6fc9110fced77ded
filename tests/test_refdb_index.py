"""The reference database searches through the same SearchIndex as galleries (flat, FAISS, hierarchical)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from terraloc.errors import InputError


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from terraloc.encoders.image import load_backbone, make_tiny_clip

    return load_backbone(make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", projection_dim=32))


@pytest.mark.slow
def test_ivf_database_and_legacy_faiss_database(shared: Path, tmp_path: Path, backbone) -> None:  # type: ignore[no-untyped-def]
    import faiss

    from terraloc.search.index import FaissIndex, FlatIndex
    from terraloc.search.refdb import ReferenceDatabase, build_database

    photos = shared / "data" / "photos" / "osv5m" / "osv5m_photos.csv"
    seen: list[tuple[int, int]] = []
    build_database(photos, backbone, tmp_path / "flat", places=False, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (71, 71)
    flat = ReferenceDatabase.load(tmp_path / "flat", backbone=backbone)
    assert isinstance(flat.index, FlatIndex) and flat.manifest["index"] == {"spec": "flat", "options": {}}
    q = np.asarray(flat.embeddings[:5], dtype=np.float32)
    s_flat, i_flat = flat.search(q, 4)
    assert (i_flat[:, 0] == np.arange(5)).all() and np.allclose(s_flat[:, 0], 1.0, atol=1e-5)

    # IVF with every list probed is exact; the index is built at build time and cached in indexes/
    build_database(
        photos, backbone, tmp_path / "ivf", places=False, index="IVF2,Flat", index_options={"params": "nprobe=2"}
    )
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


def test_bad_index_spec_is_refused_before_embedding(tmp_path: Path, backbone) -> None:  # type: ignore[no-untyped-def]
    from terraloc.search.refdb import build_database

    missing = tmp_path / "nothing.csv"  # never read: the spec is checked first
    with pytest.raises(InputError, match="not a valid FAISS factory string"):
        build_database(missing, backbone, tmp_path / "db", index="IVF2,Bogus")
    with pytest.raises(InputError, match=r"unknown hierarchical index option\(s\) topp; known: beam, branching"):
        build_database(missing, backbone, tmp_path / "db", index="hierarchical", index_options={"topp": 3})
    assert not (tmp_path / "db" / ".work").exists()


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
