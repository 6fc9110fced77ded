"""Train -> predict for the trainable heads, and the backbone record that ties a checkpoint to its backbone.

Real photos -> `terraloc embed` (tiny CLIP) -> `terraloc train geoclip|geosurge` -> the prediction heads.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from terraloc.errors import InputError


def _embed(cli, shared: Path, tmp: Path, backbone: Path, n: int = 24) -> Path:  # type: ignore[no-untyped-def]
    src = shared / "data" / "photos" / "osv5m"
    lines = (src / "osv5m_photos.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1 : n + 1]]
    csv = tmp / "photos.csv"
    csv.write_text("path,lat,lon\n" + "".join(f"{src / r[0]},{r[2]},{r[3]}\n" for r in rows))
    r = cli("embed", "--photos", csv, "--out", tmp / "shards", "--backbone", backbone, "--batch-size", "8")
    assert r.code == 0, r.err
    return tmp / "shards"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from terraloc.encoders.image import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", seed=0)


@pytest.mark.slow
def test_train_geoclip_output_loads_in_the_geoclip_head(shared: Path, tmp_path: Path, cli, tiny: Path) -> None:  # type: ignore[no-untyped-def]
    from terraloc.encoders.image import load_backbone, load_image
    from terraloc.models.geoclip import GeoCLIP, GeoCLIPHead
    from terraloc.train.shards import ShardSet

    shards = _embed(cli, shared, tmp_path, tiny)
    bb = load_backbone(tiny)
    assert ShardSet(shards).backbone == bb.describe()
    r = cli(
        "train", "geoclip", "--train", shards, "--out", tmp_path / "run", "--pretrained", "--freeze-location",
        "--batch-size", "8", "--epochs", "2", "--lr", "1e-2", "--queue-size", "16", "--no-progress",
        "--no-tensorboard",
    )  # fmt: skip
    assert r.code == 0, r.err
    ckpt = tmp_path / "run" / "last.pt"
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert json.loads(payload["backbone"]) == bb.describe()
    assert any(k.startswith("mlp.") for k in payload["model"]) and not any(
        k.startswith("image_") for k in payload["model"]
    )

    head = GeoCLIPHead.from_checkpoint(ckpt)
    # the trained MLP and logit scale, not the published ones (training moved them)
    for k, v in head.mlp.state_dict().items():
        torch.testing.assert_close(v, payload["model"][f"mlp.{k}"].float())
    published = GeoCLIPHead.pretrained()
    assert not torch.equal(head.mlp[0].weight, published.mlp[0].weight)
    # frozen published location encoder: the cached 100K gallery is reused as is
    torch.testing.assert_close(head.gallery, published.gallery)
    assert head.required_backbone == bb.describe() and head.checkpoint == ckpt

    photo = shared / "data" / "photos" / "osv5m" / "1105240373293389.jpg"
    model = GeoCLIP(bb, head).eval()
    pixels = bb.preprocess.batch([load_image(photo)])
    top = model.predict_pixels(pixels, top_k=3)
    # the same as the checkpoint's weights computed by hand: softmax over the gallery of scaled cosines
    with torch.no_grad():
        f = torch.nn.functional.normalize(head.mlp(bb.features(pixels)), dim=1)
        probs = (head.logit_scale.exp() * f @ head.gallery.T).softmax(-1)
    want = torch.topk(probs, 3, dim=1)
    np.testing.assert_allclose(top.scores, want.values.double().numpy(), rtol=1e-5)
    np.testing.assert_array_equal(top.indices, want.indices.numpy())

    # the same through `terraloc predict --head geoclip --checkpoint` (the product's head registry);
    # --distinct-km 0: the head's own top-3, not merged into distinct places
    r = cli("predict", photo, "--backbone", tiny, "--head", "geoclip", "--checkpoint", ckpt, "--format", "json",
            "--top-k", "3", "--no-places", "--distinct-km", "0")  # fmt: skip
    assert r.code == 0, r.err
    rec = json.loads(r.out.strip().splitlines()[0])
    got = np.array([[c["lat"], c["lon"]] for c in rec["candidates"]])
    np.testing.assert_allclose(got, top.coords[0], atol=1e-4)
    np.testing.assert_allclose([c["probability"] for c in rec["candidates"]], top.scores[0], rtol=1e-4)
    assert rec["model"]["checkpoint"] == str(ckpt)

    # another backbone of the same width is refused, naming the checkpoint
    from terraloc.encoders.image import make_tiny_clip

    other = load_backbone(make_tiny_clip(tmp_path / "other", seed=1))
    with pytest.raises(InputError, match=r"GeoCLIP checkpoint \(.*last\.pt\) was built with backbone") as exc:
        GeoCLIP(other, head)
    assert "\n" not in str(exc.value) and other.weights_hash in str(exc.value)
    r = cli("predict", photo, "--backbone", tmp_path / "other", "--head", "geoclip", "--checkpoint", ckpt)
    assert r.code == 2 and "last.pt" in r.err and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_geosurge_checkpoint_refuses_another_backbone(shared: Path, tmp_path: Path, cli, tiny: Path) -> None:  # type: ignore[no-untyped-def]
    from terraloc.encoders.image import load_backbone, make_tiny_clip
    from terraloc.models.geosurge import GeoSurgeHead, load_checkpoint, save_checkpoint
    from terraloc.models.head import check_backbone, check_dim

    shards = _embed(cli, shared, tmp_path, tiny)
    r = cli(
        "train", "geosurge", "--train", shards, "--out", tmp_path / "run", "--tau-max", "40,10", "--tau-min", "1",
        "--batch-size", "8", "--epochs", "1", "--no-progress", "--no-tensorboard",
    )  # fmt: skip
    assert r.code == 0, r.err
    ckpt = tmp_path / "run" / "last.pt"
    head = GeoSurgeHead.from_checkpoint(ckpt)
    bb = load_backbone(tiny)
    assert head.required_backbone == bb.describe()
    src = str(head.checkpoint)
    check_backbone(head.required_backbone, bb, what="the geosurge head", source=src)  # its own backbone: accepted

    other = load_backbone(make_tiny_clip(tmp_path / "other", seed=1))  # same width, other weights
    assert other.dim == bb.dim and other.weights_hash != bb.weights_hash
    with pytest.raises(InputError, match=r"geosurge head \(.*last\.pt\) was built with backbone") as exc:
        check_backbone(head.required_backbone, other, what="the geosurge head", source=src)
    assert "\n" not in str(exc.value) and str(tiny.resolve()) in str(exc.value)

    photo = shared / "data" / "photos" / "osv5m" / "1105240373293389.jpg"
    r = cli("predict", photo, "--backbone", tmp_path / "other", "--checkpoint", ckpt, "--no-places")
    assert r.code == 2 and "last.pt" in r.err and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    # without --backbone the recorded one is used
    r = cli("predict", photo, "--checkpoint", ckpt, "--format", "json", "--no-places")
    assert r.code == 0, r.err
    assert json.loads(r.out.strip().splitlines()[0])["model"]["backbone"]["hash"] == bb.weights_hash

    # a checkpoint from before the record: accepted; only the width is checked
    model, partition, _ = load_checkpoint(ckpt)
    save_checkpoint(tmp_path / "old.pt", model, partition)
    old = GeoSurgeHead.from_checkpoint(tmp_path / "old.pt")
    assert old.required_backbone is None
    check_backbone(old.required_backbone, other, what="the geosurge head")
    check_dim(other.dim, old.input_dim, what="the geosurge head")
    effnet = SimpleNamespace(model_id="efficientnet-lite0", weights_hash="abc", dim=1280)
    with pytest.raises(InputError, match=r"1280-d features but the geosurge head .* expects 768-d"):
        check_dim(effnet.dim, old.input_dim, what="the geosurge head", source="old.pt")
