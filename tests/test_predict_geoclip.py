"""Preprocessing equals CLIPImageProcessor; GeoCLIP head equals the reference GeoCLIP.predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from terraloc.encoders.image import Preprocess, load_backbone, load_image


def _photo(shared: Path, name: str) -> Path:
    for sub in ("osv5m", "im2gps3k_dev"):
        p = shared / "data/photos" / sub / name
        if p.exists():
            return p
    raise FileNotFoundError(name)


@pytest.mark.parametrize("size", [224, 336])
def test_preprocess_matches_clip_image_processor(shared, size: int) -> None:  # type: ignore[no-untyped-def]
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    hf = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    ours = Preprocess(size=size, crop=size)
    rng = np.random.default_rng(0)
    images = [load_image(p) for p in sorted((shared / "data/photos/osv5m").glob("*.jpg"))[:2]]
    images += [load_image(p) for p in sorted((shared / "data/photos/im2gps3k_dev").glob("*.jpg"))[:2]]
    images += [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(100, 700), (513, 257), (300, 300), (120, 90)]  # extreme aspect, odd, square, smaller than crop
    ]
    for img in images:
        want = hf(images=img, return_tensors="np")["pixel_values"][0]
        got = ours(img)
        assert got.shape == want.shape == (3, size, size)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_ten_crop_shape_and_centre() -> None:
    pre = Preprocess()
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    crops = pre.ten_crop(img)
    assert crops.shape == (10, 3, 224, 224)
    np.testing.assert_allclose(crops[5], crops[0][:, :, ::-1])  # mirrored corner


@pytest.mark.slow
def test_geoclip_matches_reference_predict(shared) -> None:  # type: ignore[no-untyped-def]
    from terraloc.models.geoclip import load_geoclip

    ref_dir = shared / "data/reference/geoclip_predict"
    ref = json.loads((ref_dir / "geoclip_predict_reference.json").read_text())
    model = load_geoclip(ref_dir / "tiny_clip")
    pixels = model.backbone.preprocess.batch([load_image(_photo(shared, r["photo"])) for r in ref])
    top = model.predict_pixels(pixels, top_k=5)
    feats = model.image_features(pixels)
    for i, r in enumerate(ref):
        assert pixels[i].mean().item() == pytest.approx(r["pixel_values_mean"], abs=1e-6)
        np.testing.assert_allclose(feats[i, :8].numpy(), r["image_feature_first8"], atol=1e-5)
        probs, coords = np.array(r["top5_prob"]), np.array(r["top5_latlon"])
        np.testing.assert_allclose(top.scores[i], probs, atol=1e-4)
        # ties: compare the set of locations per distinct probability
        for p in np.unique(np.round(probs, 7)):
            want = {tuple(np.round(c, 4)) for c in coords[np.isclose(probs, p, atol=1e-7)]}
            got = {tuple(np.round(c, 4)) for c in top.coords[i][np.isclose(top.scores[i], p, atol=1e-6)]}
            assert want <= got or want == got, (r["photo"], want, got)


def test_backbone_interface_with_tiny_clip(tmp_path: Path) -> None:
    from terraloc.encoders.image import make_tiny_clip

    folder = make_tiny_clip(tmp_path / "tiny", projection_dim=64)
    bb = load_backbone(folder)
    imgs = [Image.new("RGB", (50, 80), (i * 40, 100, 200)) for i in range(3)]
    emb = bb.embed(imgs)
    assert emb.shape == (3, 64) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    tok = bb.tokens(imgs)
    assert tok.shape == (3, 1 + (224 // 32) ** 2, 32)
    assert bb.weights_hash and bb.model_id == str(folder.resolve())
    again = load_backbone(folder)
    assert torch.allclose(again.embed(imgs), emb)


def test_missing_model_names_pull_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from terraloc.errors import MissingResourceError

    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingResourceError, match="terraloc models pull clip-vit-large-patch14"):
        load_backbone("openai/clip-vit-large-patch14")


def test_efficientnet_lite0_offline(shared) -> None:  # type: ignore[no-untyped-def]
    bb = load_backbone("efficientnet-lite0")
    photos = sorted((shared / "data/photos/osv5m").glob("*.jpg"))[:4]
    emb = bb.embed([load_image(p) for p in photos])
    assert emb.shape == (4, 1280)
    assert torch.isfinite(emb).all()
    assert bb.tokens([load_image(photos[0])]).shape == (1, 50, 1280)
