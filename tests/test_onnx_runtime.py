"""ONNX Runtime backend for image backbones: export of the real CLIP code path on a tiny CLIP."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")  # the 'onnx' extra; installed by `make test` (dev extra)


def test_tiny_clip_exports_and_matches_torch(tmp_path: Path) -> None:
    from terraloc.encoders.image import load_backbone, make_tiny_clip
    from terraloc.encoders.image.onnx_runtime import OnnxFeatures, export_features

    bb = load_backbone(str(make_tiny_clip(tmp_path / "tiny", projection_dim=32)))
    size = bb.preprocess.crop
    path = export_features(bb, tmp_path / "onnx" / "backbone.onnx", size)
    session = OnnxFeatures(path, threads=1)
    torch.manual_seed(0)
    for n in (1, 3):  # the batch dimension is dynamic
        x = torch.randn(n, 3, size, size)
        with torch.no_grad():
            expected = bb.features(x)
        got = session.features(x)
        assert got.shape == (n, 32)
        assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())
    # a different image size than the export's is a shape error from the runtime, not a wrong answer
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        session.features(torch.randn(1, 3, size + 16, size + 16))
