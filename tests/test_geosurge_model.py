"""GeoSURGE model: InfoNCE against hand-computed values, hierarchical inference, head checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from terraloc.errors import InputError, MissingResourceError
from terraloc.geo.s2partition import S2Partition
from terraloc.models.geosurge import GeoSurge, GeoSurgeConfig, GeoSurgeHead, Refiner, load_checkpoint, save_checkpoint


def _hand_model(temperature: float = 0.5) -> GeoSurge:
    model = GeoSurge(GeoSurgeConfig(input_dim=2, level_sizes=(3,), embed_dim=2))
    with torch.no_grad():
        model.proj.weight.copy_(torch.eye(2))  # type: ignore[operator]
        model.proj.bias.zero_()  # type: ignore[union-attr]
        model.cells[0].copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]))  # normalised when used
        model.log_temperature.fill_(math.log(temperature))
    return model


def test_info_nce_full_softmax_matches_hand_computation() -> None:
    model = _hand_model()
    x = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    loss, per_level = model.loss(x, torch.tensor([[0], [1]]), "full")
    # Sample 0: cosines (1, 0, -1) / 0.5 -> logits (2, 0, -2), positive 0.
    l0 = -2 + math.log(math.exp(2) + 1 + math.exp(-2))
    # Sample 1: cosines (0, 1, 0) / 0.5 -> logits (0, 2, 0), positive 1.
    l1 = -2 + math.log(2 + math.exp(2))
    assert float(loss.detach()) == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert per_level[0] == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_info_nce_in_batch_collapses_duplicate_cells() -> None:
    model = _hand_model()
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss, _ = model.loss(x, torch.tensor([[0], [0], [1]]), "inbatch")
    # Candidates are cells {0, 1} once each (cell 2 is absent from the batch).
    l0 = -2 + math.log(math.exp(2) + 1)  # logits (2, 0)
    l2 = -2 + math.log(1 + math.exp(2))  # logits (0, 2)
    assert float(loss.detach()) == pytest.approx((l0 + l0 + l2) / 3, rel=1e-6)
    # One cell only: the loss is exactly zero, not a penalty between the two duplicates.
    single, _ = model.loss(x[:2], torch.tensor([[0], [0]]), "inbatch")
    assert float(single.detach()) == pytest.approx(0.0, abs=1e-7)
    # -1 labels are ignored.
    ign, _ = model.loss(x, torch.tensor([[0], [-1], [1]]), "inbatch")
    assert float(ign.detach()) == pytest.approx((l0 + l2) / 2, rel=1e-6)


def _toy_partition() -> tuple[S2Partition, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = np.array([[48.85, 2.35], [40.7, -74.0], [35.7, 139.7], [-33.9, 151.2]])
    coords = np.concatenate([c + rng.normal(0, 2.0, (300, 2)) for c in centres])
    return S2Partition.build(coords, (400, 100, 40), 5), coords


def test_hierarchical_scores_sum_log_probs_along_ancestry() -> None:
    part, _ = _toy_partition()
    torch.manual_seed(0)
    model = GeoSurge(GeoSurgeConfig(input_dim=8, level_sizes=tuple(part.sizes), embed_dim=16))
    x = torch.randn(5, 8)
    f = model.features(x)
    # Reference: every level's full log-softmax, gathered along each leaf's ancestry and summed.
    scores = sum(
        torch.log_softmax(model.level_logits(f, lv), -1)[:, torch.as_tensor(part.ancestry[:, lv])]
        for lv in range(part.n_levels)
    )
    leaf = 3
    expect = sum(
        torch.log_softmax(model.level_logits(f, lv), -1)[:, part.ancestry[leaf, lv]] for lv in range(part.n_levels)
    )
    torch.testing.assert_close(scores[:, leaf], expect)
    # The head's one scoring path (one matmul, gathered logits minus log-normalisers) gives the same scores.
    head = GeoSurgeHead(model, part)
    torch.testing.assert_close(head.leaf_log_scores(x), scores, rtol=1e-5, atol=1e-5)
    all_levels = head.leaf_log_scores(x, range(part.n_levels))
    torch.testing.assert_close(all_levels, scores, rtol=1e-5, atol=1e-5)
    finest = torch.log_softmax(model.level_logits(f, part.n_levels - 1), -1)
    torch.testing.assert_close(head.leaf_log_scores(x, [part.n_levels - 1]), finest, rtol=1e-5, atol=1e-5)


def test_head_checkpoint_round_trip_and_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    part, coords = _toy_partition()
    torch.manual_seed(0)
    model = GeoSurge(GeoSurgeConfig(input_dim=8, level_sizes=tuple(part.sizes), embed_dim=16))
    save_checkpoint(tmp_path / "m.pt", model, part)
    head = GeoSurgeHead.from_checkpoint(tmp_path / "m.pt")
    x = np.random.default_rng(1).normal(size=(7, 8)).astype(np.float32)
    ll, probs = head.predict(x, top_k=3)
    assert ll.shape == (7, 3, 2) and probs.shape == (7, 3)
    assert (np.diff(probs, axis=1) <= 1e-9).all() and (probs.sum(1) <= 1 + 1e-6).all()
    np.testing.assert_allclose(
        ll,
        part.centers[-1][np.argsort(-head.leaf_log_scores(torch.from_numpy(x)).numpy(), 1)[:, :3]],
    )
    # Refinement picks a reference inside the winning leaf.
    ref_emb = np.random.default_rng(2).normal(size=(len(coords), 8)).astype(np.float32)
    refined, _ = GeoSurgeHead(head.model, part, Refiner(part, coords, ref_emb)).predict(x, top_k=1)
    win = part.assign(refined[:, 0])[:, -1]
    top = np.argmax(head.leaf_log_scores(torch.from_numpy(x)).numpy(), 1)
    np.testing.assert_array_equal(win, top)
    assert any((coords == r).all(1).any() for r in refined[:, 0])
    with pytest.raises(InputError, match="expected \\(N, 8\\)"):
        head.predict(np.zeros((2, 5), np.float32))
    with pytest.raises(MissingResourceError):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="not a GeoSURGE checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    other = GeoSurge(GeoSurgeConfig(input_dim=8, level_sizes=(2, 3), embed_dim=16))
    with pytest.raises(InputError, match="level sizes"):
        GeoSurgeHead(other, part)


def test_lazy_adamw_is_exact_adamw_on_touched_rows_and_leaves_others() -> None:
    from terraloc.train.optim import LazyAdamW

    torch.manual_seed(0)
    w0, d0 = torch.randn(6, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    ref_w, ref_d = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(d0.clone())
    lazy_w, lazy_d = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(d0.clone())
    ref = torch.optim.AdamW([ref_w, ref_d], lr=0.01, weight_decay=0.1)
    lazy = LazyAdamW([lazy_w, lazy_d], lr=0.01, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(6, 4, dtype=torch.float64)
        gd = torch.randn(3, dtype=torch.float64)
        ref_w.grad, ref_d.grad = g.clone(), gd.clone()
        # Every row touched: the sparse gradient (rows listed out of order, one twice) is g.
        idx = torch.tensor([5, 0, 1, 2, 3, 4, 0])
        vals = torch.cat([g[[5, 0, 1, 2, 3, 4]], torch.zeros(1, 4, dtype=torch.float64)])
        lazy_w.grad = torch.sparse_coo_tensor(idx[None], vals, (6, 4))
        lazy_d.grad = gd.clone()
        ref.step()
        lazy.step()
    torch.testing.assert_close(lazy_w.data, ref_w.data)
    torch.testing.assert_close(lazy_d.data, ref_d.data)
    # Rows without gradient are left alone (exact AdamW would keep moving them).
    before = lazy_w.data.clone()
    lazy_w.grad = torch.sparse_coo_tensor(torch.tensor([[2]]), torch.ones(1, 4, dtype=torch.float64), (6, 4))
    lazy.step()
    changed = (lazy_w.data != before).any(1)
    assert changed.tolist() == [False, False, True, False, False, False]


def test_in_batch_loss_with_sparse_tables_matches_dense() -> None:
    part, coords = _toy_partition()
    torch.manual_seed(0)
    model = GeoSurge(GeoSurgeConfig(input_dim=8, level_sizes=tuple(part.sizes), embed_dim=16))
    x = torch.randn(len(coords), 8)[:64]
    labels = torch.from_numpy(part.assign(coords[::19][:64]))
    dense, _ = model.loss(x, labels, "inbatch")
    dense.backward()
    grads = [p.grad.clone() for p in model.cells]  # type: ignore[union-attr]
    model.zero_grad()
    model.sparse_tables = True
    sparse, _ = model.loss(x, labels, "inbatch")
    sparse.backward()
    assert float(sparse.detach()) == pytest.approx(float(dense.detach()), rel=1e-6)
    for g, p in zip(grads, model.cells, strict=True):
        assert p.grad is not None and p.grad.is_sparse
        torch.testing.assert_close(p.grad.to_dense(), g)


def test_paired_difference_of_two_heads() -> None:
    from terraloc.train.ablation import paired_difference

    a = np.array([0.5, 10.0, 30.0, 300.0, 3000.0] * 40)
    b = np.array([5.0, 10.0, 30.0, 300.0, 3000.0] * 40)  # b misses the 1 km hits of a
    d = paired_difference(a, b, n_boot=200)
    assert d["1"]["diff"] == pytest.approx(20.0) and d["25"]["diff"] == 0.0
    assert d["1"]["ci95"][0] > 0 and d["25"]["ci95"] == [0.0, 0.0]
