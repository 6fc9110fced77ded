"""`terraloc train g3`: image/GPS/text alignment on a SYNTHETIC shard set (learning, exact resume, loading)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terraloc.errors import InputError
from terraloc.train.g3 import G3Head, G3Verifier, build_g3_objective, load_g3_model, write_g3_shards
from terraloc.train.shards import ShardSet
from terraloc.train.trainer import TrainConfig, fit


def _synthetic(out: Path, n: int, seed: int, centres: np.ndarray) -> Path:
    """Photos at 48 places; image/text embeddings are fixed random functions of the place plus noise."""
    rng = np.random.default_rng(seed)
    place = rng.integers(0, len(centres), n)
    ll = centres[place] + rng.normal(scale=0.05, size=(n, 2))
    proto = np.random.default_rng(99)
    img_w = proto.normal(size=(len(centres), 24))
    txt_w = proto.normal(size=(len(centres), 16))
    img = img_w[place] + 0.5 * rng.normal(size=(n, 24))
    txt = txt_w[place] + 0.3 * rng.normal(size=(n, 16))
    write_g3_shards(out, [f"p{i}" for i in range(n)], ll, img.astype(np.float32), txt.astype(np.float32), 300)
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("g3")
    centres = np.random.default_rng(5).uniform([-60, -170], [60, 170], size=(48, 2))
    return _synthetic(root / "train", 1536, 0, centres), _synthetic(root / "val", 256, 1, centres)


def _cfg(out: Path, **kw: object) -> TrainConfig:
    base = dict(
        out_dir=out, epochs=4, batch_size=128, lr=3e-3, gamma=0.8, patience=10, progress=False, tensorboard=False
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_g3_learns_well_above_untrained(shards: tuple[Path, Path], tmp_path: Path) -> None:
    tr, va = ShardSet(shards[0]), ShardSet(shards[1])
    torch.manual_seed(0)
    obj = build_g3_objective(tr, va)
    before = obj.validate(va)
    res = fit(obj, tr, va, _cfg(tmp_path / "run"))
    after = res.history[-1]
    # 48 places: a random row of the batch is at the image's place about 1/48 of the time
    assert before["val_acc_image_gps"] < 0.1 and before["val_acc_image_text"] < 0.1
    assert after["val_acc_image_text"] > 0.5 and after["val_acc_image_gps"] > 0.5, res.history
    assert after["val_loss"] < before["val_loss"] - 1.0
    # loads as a verifier and as a head: the true coordinate scores higher than a far one
    model = load_g3_model(tmp_path / "run" / "best.pt")
    ver = G3Verifier(model)
    b = va.read_shard(0)
    img = b.emb[:64, : model.image_dim]
    far = b.latlon[:64].copy()
    far[:, 1] = ((far[:, 1] + 180 + 180) % 360) - 180
    far[:, 0] = -far[:, 0]
    s = ver.score(img, np.stack([b.latlon[:64], far], axis=1))
    assert (s[:, 0] > s[:, 1]).mean() > 0.8
    # as the RAG reasoner's verifier: select_verify picks the true place among far-away candidates
    from terraloc.rag.candidates import Candidate
    from terraloc.rag.select import select_verify

    wins = 0
    for r in range(16):
        cands = [Candidate(float(far[r, 0]), float(far[r, 1]), source="llm"),
                 Candidate(float(b.latlon[r, 0]), float(b.latlon[r, 1]), source="refdb-nearest", rank=1)]  # fmt: skip
        sel = select_verify(ver.project_image(img[r]), cands, ver.location_encoder())
        wins += sel.chosen is cands[1]
    assert wins >= 13
    head = G3Head(model, tr.coords())
    coords, probs = head.predict_arrays(img, top_k=3)
    assert coords.shape == (64, 3, 2) and (np.diff(probs, axis=1) <= 0).all()
    from terraloc.geo.distance import haversine_km

    assert np.median(haversine_km(coords[:, 0], b.latlon[:64])) < 2000


def test_g3_resumes_exactly(shards: tuple[Path, Path], tmp_path: Path) -> None:
    tr, va = ShardSet(shards[0]), ShardSet(shards[1])

    def run(out: Path, **kw: object) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        obj = build_g3_objective(tr, va)
        fit(obj, tr, va, _cfg(out, epochs=2, dtype="float64", checkpoint_every=5, **kw))
        return {k: v.clone() for k, v in obj.model.state_dict().items()}

    straight = run(tmp_path / "a")
    run(tmp_path / "b", max_steps=17)  # stops mid-epoch 2 (12 steps per epoch) after saving last.pt
    resumed = run(tmp_path / "b", resume=True)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_g3_cli_and_bad_shards(cli, shards: tuple[Path, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli(
        "train",
        "g3",
        "--train",
        shards[0],
        "--val",
        shards[1],
        "--out",
        tmp_path / "r",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--no-progress",
        "--no-tensorboard",
    )
    assert r.code == 0, r.err
    assert (tmp_path / "r" / "best.pt").exists()
    from terraloc.train.shards import write_shards

    plain = tmp_path / "plain"
    write_shards([(["a", "b"], np.array([[0.0, 0.0], [1.0, 1.0]]), np.ones((2, 4), np.float32))], plain, 4)
    r = cli("train", "g3", "--train", plain, "--out", tmp_path / "r2")
    assert r.code == 2 and "not a G3 shard folder" in r.err
    with pytest.raises(InputError):
        build_g3_objective(ShardSet(plain))


@pytest.mark.slow
def test_g3_torchrun_two_ranks_match_one_rank(shards: tuple[Path, Path], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"ddp{n}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
               "--master_port", str(29600 + n + os.getpid() % 1000), "-m", "terraloc",
               "train", "g3", "--train", str(shards[0]), "--out", str(out), "--batch-size", "128",
               "--max-steps", "5", "--dtype", "float64", "--no-progress", "--no-tensorboard"]  # fmt: skip
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        runs[n] = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["model"]
    for k in runs[1]:
        torch.testing.assert_close(runs[2][k], runs[1][k], rtol=1e-6, atol=1e-8)


def test_embed_text_makes_g3_shards_from_image_shards(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from terraloc.encoders.image.backbones import load_backbone, make_tiny_clip
    from terraloc.geo.describe import describe_coords
    from terraloc.train.g3 import g3_dims
    from terraloc.train.shards import write_shards

    tiny = make_tiny_clip(tmp_path / "tiny", tokenizer=True)
    ll = np.array([[48.8566, 2.3522], [48.8570, 2.3530], [35.0116, 135.7681], [-33.8688, 151.2093]])
    img = np.random.default_rng(0).normal(size=(4, 768)).astype(np.float32)
    write_shards([(["a", "b", "c", "d"], ll, img)], tmp_path / "img", 768, shard_rows=3)
    r = cli("embed-text", "--shards", tmp_path / "img", "--backbone", tiny, "--out", tmp_path / "g3")
    assert r.code == 0, r.err
    s = ShardSet(tmp_path / "g3")
    assert g3_dims(s) == (768, 768) and s.n_rows == 4
    rows = np.concatenate([s.read_shard(i).emb for i in range(len(s.shards))])
    np.testing.assert_array_equal(rows[:, :768], img)
    want = load_backbone(tiny, text=True).text.embed(describe_coords(ll, nearby=0).column("description").to_pylist())
    np.testing.assert_allclose(rows[:, 768:], want, atol=1e-6)
    np.testing.assert_array_equal(rows[0, 768:], rows[1, 768:])  # same place, same description
    r = cli("embed-text", "--shards", tmp_path / "img", "--backbone", tiny, "--out", tmp_path / "g3")
    assert r.code == 2 and "choose a new --out" in r.err
    r = cli("embed-text", "--shards", tmp_path / "img", "--backbone", "efficientnet-lite0", "--out", tmp_path / "x")
    assert r.code == 2 and "text tower" in r.err
