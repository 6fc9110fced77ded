"""End-to-end prediction throughput with the ViT-L/14 architecture (``terraloc bench predict``).

:func:`bench_one` times GeoCLIP prediction of real shared JPEGs (decode → preprocess → ViT-L/14 →
MLP → gallery search → top-5 → place names) with random ViT-L/14 weights (they time the same as
real ones), the share of the time spent outside the backbone, and optionally the backbone under
int8 dynamic quantisation and under ONNX Runtime.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def _photos(n: int) -> list[Any]:
    """``n`` real shared JPEGs (decoding is part of the measurement), or synthetic images."""
    from terraloc.config import shared_dir

    root = shared_dir(required=False) / "data/photos/im2gps3k_dev"
    files: list[Any] = sorted(root.glob("*.jpg"))[:n] if root.is_dir() else []
    if len(files) < n:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        files += [Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)) for _ in range(n - len(files))]
    return files


def bench_one(
    size: int,
    n_images: int,
    batch_size: int,
    workers: int,
    quantize: bool,
    onnx: bool = False,
    index: str | None = None,
) -> dict[str, Any]:
    """Time GeoCLIP prediction (decode → preprocess → ViT-L/14 → MLP → 100K gallery → top-5 → places)."""
    import torch

    from terraloc.encoders.image.backbones import random_vit_l14
    from terraloc.pipeline import Geolocator, resolve_config

    bb = random_vit_l14(size)
    config, _ = resolve_config(backbone=bb.model_id, index=index, batch_size=batch_size, workers=workers)
    geo = Geolocator(config, backbone=bb)
    spent = {"backbone": 0.0}
    inner = bb.features

    def timed(pixels: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        out = inner(pixels)
        spent["backbone"] += time.perf_counter() - t
        return out

    bb.features = timed  # type: ignore[method-assign]
    photos = _photos(n_images)
    list(geo.predict_iter(photos[:1], top_k=5))  # warm-up (gallery, places table, first-call overheads)
    spent["backbone"] = 0.0
    t0 = time.perf_counter()
    preds = list(geo.predict_iter(photos, top_k=5))
    total = time.perf_counter() - t0
    assert all(p.ok for p in preds)
    row: dict[str, Any] = {
        "index": geo.config.index,
        "image_size": size,
        "images": n_images,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "seconds": round(total, 3),
        "images_per_s": round(n_images / total, 3),
        "backbone_s": round(spent["backbone"], 3),
        "outside_backbone_share": round(1 - spent["backbone"] / total, 4),
    }
    bb.features = inner  # type: ignore[method-assign]
    pixels = bb.preprocess.batch([p if not isinstance(p, Path) else _load(p) for p in photos[:batch_size]])
    with torch.inference_mode():
        fp = _time_backbone(bb, pixels)
        ref = torch.nn.functional.normalize(bb.features(pixels), dim=-1)
    row["fp32_backbone_images_per_s"] = round(pixels.shape[0] / fp, 3)
    if onnx:
        row.update(_onnx_row(bb, pixels, size, fp, ref))
    if quantize:
        with torch.inference_mode():
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qbb = torch.ao.quantization.quantize_dynamic(bb, {torch.nn.Linear}, dtype=torch.qint8)
            q = _time_backbone(qbb, pixels)
            b = torch.nn.functional.normalize(qbb.features(pixels), dim=-1)
        row.update(
            {
                "int8_dynamic_backbone_images_per_s": round(pixels.shape[0] / q, 3),
                "int8_speedup": round(fp / q, 3),
                "int8_min_cosine_to_fp32": round(float((ref * b).sum(-1).min()), 5),
            }
        )
    return row


def _onnx_row(bb: Any, pixels: Any, size: int, fp: float, ref: Any) -> dict[str, Any]:
    """Export the backbone to ONNX in a temporary folder and time it with ONNX Runtime (same batch)."""
    import tempfile

    import torch

    from terraloc.encoders.image.onnx_runtime import OnnxFeatures, export_features

    with tempfile.TemporaryDirectory(prefix="terraloc-onnx-") as tmp:
        t = time.perf_counter()
        path = export_features(bb, Path(tmp) / "backbone.onnx", size)
        export_s = time.perf_counter() - t
        sess = OnnxFeatures(path)
        sess.features(pixels[:1])  # warm-up: first run allocates and plans
        o = _time_backbone(sess, pixels)
        b = torch.nn.functional.normalize(sess.features(pixels), dim=-1)
    return {
        "onnx_export_s": round(export_s, 1),
        "onnxruntime_backbone_images_per_s": round(pixels.shape[0] / o, 3),
        "onnxruntime_speedup": round(fp / o, 3),
        "onnxruntime_min_cosine_to_fp32": round(float((ref * b).sum(-1).min()), 6),
    }


def _load(p: Path) -> Any:
    from terraloc.encoders.image import load_image

    return load_image(p)


def _time_backbone(bb: Any, pixels: Any, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        bb.features(pixels)
        best = min(best, time.perf_counter() - t)
    return best
