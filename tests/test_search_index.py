"""Search backends agree with exact flat search on small random data; bad queries are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terraloc.errors import InputError
from terraloc.search.index import FlatIndex, make_index


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    centres = _unit(rng.normal(size=(50, 32)))
    gallery = _unit(centres[rng.integers(0, 50, 4000)] + 0.05 * rng.normal(size=(4000, 32)))
    queries = _unit(gallery[rng.integers(0, 4000, 100)] + 0.02 * rng.normal(size=(100, 32)))
    return gallery, queries


def _brute(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :k]


def test_flat_is_exact(data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    idx = make_index("flat", gallery)
    r = idx.search(queries, 5)
    assert r.scores.shape == (100, 5) and r.scores.dtype == np.float32 and r.indices.dtype == np.int64
    assert r.comparisons_per_query == 4000
    np.testing.assert_array_equal(r.indices, _brute(gallery, queries, 5))
    np.testing.assert_allclose(r.scores, np.take_along_axis(queries @ gallery.T, r.indices, 1), atol=1e-5)
    assert (np.diff(r.scores, axis=1) <= 0).all()


def test_flat_streamed_float16_matches_in_memory(data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    g16 = gallery.astype(np.float16)
    a = FlatIndex(g16).search(queries, 7)
    b = FlatIndex(g16, block_rows=999, max_memory_mb=0).search(queries, 7)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


@pytest.mark.parametrize(
    ("spec", "options", "min_recall"),
    [
        ("Flat", {}, 1.0),
        ("HNSW16", {"ef_search": 64}, 0.95),
        ("IVF32,Flat", {"nprobe": 8}, 0.9),
    ],
)
def test_faiss_against_flat(data: tuple[np.ndarray, np.ndarray], spec: str, options: dict, min_recall: float) -> None:
    gallery, queries = data
    exact = make_index("flat", gallery).search(queries, 10)
    idx = make_index(spec, gallery, **options)
    r = idx.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(r.indices, exact.indices, strict=True)])
    assert recall >= min_recall
    # Top-1 agrees for (nearly) every query.
    assert np.mean(r.indices[:, 0] == exact.indices[:, 0]) >= min_recall
    if spec == "Flat":
        assert r.comparisons_per_query == 4000
    else:
        assert 0 < r.comparisons_per_query < 4000  # approximate indexes compare with fewer vectors
    assert idx.memory_bytes > 0


def test_faiss_save_load(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    from terraloc.search.index import load_index

    gallery, queries = data
    idx = make_index("IVF16,Flat", gallery, nprobe=4)
    idx.save(tmp_path / "i.faiss")
    back = load_index(tmp_path / "i.faiss", gallery, expected_count=4000, nprobe=4)
    np.testing.assert_array_equal(back.search(queries, 3).indices, idx.search(queries, 3).indices)
    with pytest.raises(InputError, match="gallery has 10"):
        load_index(tmp_path / "i.faiss", gallery, expected_count=10)


def test_bad_queries_and_specs(data: tuple[np.ndarray, np.ndarray]) -> None:
    gallery, queries = data
    idx = make_index("flat", gallery)
    bad = queries.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="query row 3 contains NaN"):
        idx.search(bad, 1)
    with pytest.raises(InputError, match="query dimension 16 does not match the gallery dimension 32"):
        idx.search(queries[:, :16], 1)
    with pytest.raises(InputError, match="larger than the gallery"):
        idx.search(queries, 4001)
    with pytest.raises(InputError, match="k must be a positive integer"):
        idx.search(queries, 0)
    with pytest.raises(InputError, match="all zeros"):
        idx.search(np.zeros((2, 32)), 1)
    with pytest.raises(InputError, match="FAISS factory"):
        make_index("NotAnIndex99", gallery)
    # A single (D,) query is accepted as (1, D); unnormalised queries are normalised.
    r = idx.search(3 * queries[0], 2)
    assert r.indices.shape == (1, 2)
    np.testing.assert_array_equal(r.indices[0], idx.search(queries[:1], 2).indices[0])


def test_hierarchical_recall_and_comparisons(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    from terraloc.search.hierarchical import HierarchicalIndex
    from terraloc.search.index import load_index

    gallery, queries = data
    exact = make_index("flat", gallery).search(queries, 5)
    idx = make_index("hierarchical", gallery, top=40, branching=4, depth=2, beam=4)
    assert isinstance(idx, HierarchicalIndex)
    info = idx.describe()
    assert info["level_sizes"][0] == 40 and 40 < info["level_sizes"][1] <= 160
    assert sorted(idx.perm.tolist()) == list(range(4000))  # every row in exactly one leaf
    r = idx.search(queries, 5)
    assert r.indices.shape == (100, 5) and (r.indices >= 0).all()
    assert np.mean(r.indices[:, 0] == exact.indices[:, 0]) >= 0.95
    # Comparisons: 40 centroids + 4 x <=4 children + rows of 4 leaves; far below the 4,000 of flat.
    assert 40 < r.comparisons_per_query < 4000 / 5
    np.testing.assert_allclose(r.scores, np.take_along_axis(queries @ gallery.T, r.indices, 1), atol=1e-5)
    # A wider beam never finds worse top-1 scores on average and costs more comparisons.
    wide = make_index("hierarchical", gallery, top=40, branching=4, depth=2, beam=16).search(queries, 5)
    assert wide.scores[:, 0].mean() >= r.scores[:, 0].mean() - 1e-6
    assert wide.comparisons_per_query > r.comparisons_per_query
    # Save / load round trip gives identical results; deeper trees also work.
    idx.save(tmp_path / "h.npz")
    back = load_index(tmp_path / "h.npz", gallery, expected_count=4000, beam=4)
    np.testing.assert_array_equal(back.search(queries, 5).indices, r.indices)
    deep = make_index("hierarchical", gallery, top=10, branching=4, depth=3, beam=6).search(queries, 3)
    assert np.mean(deep.indices[:, 0] == exact.indices[:, 0]) >= 0.8
    with pytest.raises(InputError, match="gallery is"):
        load_index(tmp_path / "h.npz", gallery[:100], expected_count=100)


def test_hierarchical_learned_routing(tmp_path: Path) -> None:
    """Routing vectors: trained on noisy copies of the rows they route no worse than centroids on
    fresh noisy queries; trained on given (query, row) examples they route those better; the
    comparisons per node are unchanged; routes survive save/load; bad examples are refused."""
    from terraloc.search.hierarchical import HierarchicalIndex
    from terraloc.search.index import load_index

    rng = np.random.default_rng(7)
    centres = _unit(rng.normal(size=(40, 32)))
    spread = rng.uniform(0.05, 0.6, 40)[:, None]
    owner = rng.integers(0, 40, 3000)
    gallery = _unit(centres[owner] + spread[owner] * rng.normal(size=(3000, 32)))

    def noisy(n: int) -> tuple[np.ndarray, np.ndarray]:
        src = rng.integers(0, 3000, n)
        return _unit(gallery[src] + 0.2 * rng.normal(size=(n, 32))), src

    opts = {"top": 20, "branching": 4, "depth": 2, "beam": 1, "leaf_beam": 1}
    plain = HierarchicalIndex.build(gallery, **opts)
    learned = HierarchicalIndex.build(gallery, **opts, routing="learned", route_steps=300, route_noise=(0.0, 0.2))
    assert plain.describe()["routed_levels"] == [] and learned.describe()["routed_levels"] == [0, 1]
    np.testing.assert_array_equal(plain.perm, learned.perm)  # same tree, only the routing differs
    group = plain.node_of_row(0)
    assert np.array_equal(np.sort(np.unique(group)), np.arange(20))

    def hit(idx: HierarchicalIndex, q: np.ndarray, src: np.ndarray) -> float:
        r = idx.search(q, 1)
        # With beam 1 the result's group is the routed group; cost: 20 + children + one leaf.
        assert 20 < r.comparisons_per_query < 150
        return float(np.mean(group[r.indices[:, 0]] == group[src]))

    q, src = noisy(1500)
    assert hit(learned, q, src) >= hit(plain, q, src) - 0.02
    clean = [np.mean(i.search(gallery[:300], 1).indices[:, 0] == np.arange(300)) for i in (plain, learned)]
    assert clean[1] >= clean[0] - 0.03, clean
    # Real training queries (embedding, target row): the routing fits them.
    fitted = HierarchicalIndex.build(gallery, **opts)
    fitted.fit_routing((q, src), steps=600, batch=512)
    assert hit(fitted, q, src) > hit(plain, q, src) + 0.03
    learned.save(tmp_path / "l.npz")
    back = load_index(tmp_path / "l.npz", gallery, expected_count=3000, beam=1, leaf_beam=1)
    np.testing.assert_array_equal(back.search(q, 1).indices, learned.search(q, 1).indices)
    with pytest.raises(InputError, match="routing examples"):
        plain.fit_routing((q[:, :8], src))
    with pytest.raises(InputError, match="rows must be in"):
        plain.fit_routing((q, src + 3000))
    with pytest.raises(InputError, match="routing must be"):
        HierarchicalIndex.build(gallery, top=20, routing="magic")


def test_hierarchical_spill(tmp_path: Path) -> None:
    """Spill stores boundary rows in two top-level groups: every row is still covered, a query whose
    beam holds either group finds the row, top-k rows stay distinct, and the tree saves/loads."""
    from terraloc.search.hierarchical import HierarchicalIndex
    from terraloc.search.index import FlatIndex, load_index

    rng = np.random.default_rng(11)
    gallery = _unit(rng.normal(size=(2000, 16)))
    opts = {"top": 16, "branching": 4, "depth": 2, "beam": 2, "leaf_beam": 2}
    plain = HierarchicalIndex.build(gallery, **opts)
    spilled = HierarchicalIndex.build(gallery, **opts, spill=0.05)
    info = spilled.describe()
    assert plain.describe()["stored_rows"] == 2000 and 2000 < info["stored_rows"] <= 4000
    assert info["spill"] == 0.05
    counts = np.bincount(spilled.perm, minlength=2000)
    assert counts.min() == 1 and counts.max() == 2  # all rows kept, a spilled row stored twice
    # Each copy sits in a different top-level group.
    top = spilled.node_of_position(0)
    twice = np.nonzero(counts == 2)[0]
    pos_of = {int(r): np.nonzero(spilled.perm == r)[0] for r in twice[:50]}
    assert all(top[p[0]] != top[p[1]] for p in pos_of.values())

    queries = _unit(gallery[:400] + 0.15 * rng.normal(size=(400, 16)))
    truth = FlatIndex(gallery).search(queries, 1).indices[:, 0]
    recall = [float(np.mean(i.search(queries, 1).indices[:, 0] == truth)) for i in (plain, spilled)]
    assert recall[1] > recall[0], recall
    res = spilled.search(queries, 10)
    for row in res.indices:
        assert len(set(row.tolist())) == 10  # copies never fill two result slots
    assert np.all(np.diff(res.scores, axis=1) <= 0)
    # Stored copies are scored (and counted) like any other row.
    assert res.comparisons_per_query > plain.search(queries, 10).comparisons_per_query
    spilled.save(tmp_path / "s.npz")
    back = load_index(tmp_path / "s.npz", gallery, expected_count=2000, beam=2, leaf_beam=2)
    np.testing.assert_array_equal(back.search(queries, 10).indices, res.indices)
    # Routing learns from every stored copy, labelled with the group that holds that copy.
    spilled.fit_routing(steps=30, batch=256, noise=(0.0,))
    assert spilled.describe()["routed_levels"] == [0, 1]
    assert float(np.mean(spilled.search(gallery[:200], 1).indices[:, 0] == np.arange(200))) > 0.9
    with pytest.raises(InputError, match="spill"):
        HierarchicalIndex.build(gallery, top=16, spill=-0.1)


def test_distinct_topk() -> None:
    from terraloc.search.hierarchical import _distinct_topk

    scores = np.array([[0.9, 0.9, 0.5, 0.4, -np.inf], [0.8, 0.7, 0.7, 0.1, 0.0]], dtype=np.float32)
    rows = np.array([[3, 3, 1, 2, -1], [5, 6, 5, 7, 8]])
    sc, r = _distinct_topk(scores, rows, 3)
    np.testing.assert_array_equal(r, [[3, 1, 2], [5, 6, 7]])
    np.testing.assert_allclose(sc, [[0.9, 0.5, 0.4], [0.8, 0.7, 0.1]])
    sc, r = _distinct_topk(scores[:1], rows[:1], 4)
    np.testing.assert_array_equal(r, [[3, 1, 2, -1]])


def test_hierarchical_parent_weight() -> None:
    """``parent_weight`` ranks a node by its own score plus the weighted score of its parent, so a
    leaf under a clearly better parent can beat a slightly better-looking leaf elsewhere."""
    from terraloc.search.hierarchical import HierarchicalIndex, _expand

    q = np.array([[0.8, 0.6, 0.0]], dtype=np.float32)
    # Parent A scores 0.8, parent B 0.36; leaf a (under A) scores 0.64, leaf b (under B) 0.96.
    parents = np.array([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]], dtype=np.float32)
    leaves = np.array([[0.8, 0.0, 0.6], [0.6, 0.8, 0.0]], dtype=np.float32)
    rows = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)  # one row per leaf
    offsets = [np.array([0, 1, 2]), np.array([0, 1, 2])]

    def pick(weight: float) -> tuple[int, float]:
        idx = HierarchicalIndex(
            [parents, leaves], offsets, np.arange(2), rows, {}, beam=2, leaf_beam=1, parent_weight=weight
        )
        res = idx.search(q, 1)
        return int(res.indices[0, 0]), res.comparisons_per_query

    # Leaf a wins once 0.64 + 0.8 w > 0.96 + 0.36 w, i.e. w > 0.727; comparisons do not change.
    assert pick(0.0) == (1, 2 + 2 + 1)
    assert pick(0.5) == (1, 5)
    assert pick(1.0) == (0, 5)
    idx = HierarchicalIndex([parents, leaves], offsets, np.arange(2), rows, {}, parent_weight=0.25)
    assert idx.describe()["parent_weight"] == 0.25
    for bad in (-0.1, float("nan")):
        with pytest.raises(InputError, match="parent_weight"):
            HierarchicalIndex([parents, leaves], offsets, np.arange(2), rows, {}, parent_weight=bad)
    # _expand reports which beam column each child came from (-1 where padded).
    cand, slot = _expand(np.array([[4, 0], [2, 0]]), np.array([[2, 1], [1, 0]]), slots=True)
    np.testing.assert_array_equal(cand, [[4, 5, 0], [2, -1, -1]])
    np.testing.assert_array_equal(slot, [[0, 0, 1], [0, -1, -1]])
    assert _expand(np.array([[4, 0]]), np.array([[2, 1]]))[1] is None  # slots only when asked


def test_unknown_index_options_are_refused_in_one_line() -> None:
    from terraloc.search.hierarchical import HierarchicalIndex
    from terraloc.search.index import make_index

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    with pytest.raises(
        InputError, match=r"unknown hierarchical index option\(s\) bream; known: beam, branching"
    ) as exc:
        HierarchicalIndex.build(emb, top=4, bream=3)
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match=r"unknown flat index option\(s\) nprobe"):
        make_index("flat", emb, nprobe=4)
    with pytest.raises(InputError, match=r"unknown FAISS index 'IVF4,Flat' option\(s\) beam"):
        make_index("IVF4,Flat", emb, beam=4)
    # build options are accepted (and ignored) when loading a saved tree; search options apply
    idx = make_index("hierarchical", emb, top=4, beam=2)
    assert idx.beam == 2  # type: ignore[attr-defined]
