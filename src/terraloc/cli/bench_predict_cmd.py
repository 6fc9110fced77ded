"""``terraloc bench predict``: end-to-end prediction throughput with the ViT-L/14 architecture."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from terraloc.cli.app import bench_app, err_console, out_console


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


@bench_app.command("predict")
def bench_predict(
    limit: Annotated[int | None, typer.Option(help="Images per measurement (real shared JPEGs; default 16).")] = None,
    images_old: Annotated[int | None, typer.Option("--images", hidden=True, help="Old name of --limit.")] = None,
    sizes: Annotated[str, typer.Option(help="Comma-separated input sizes.")] = "224,336",
    batch_size: Annotated[int, typer.Option(help="Images per backbone call.")] = 8,
    workers: Annotated[int, typer.Option(help="Decoding threads.")] = 2,
    quantize: Annotated[bool, typer.Option(help="Also compare int8 dynamic quantisation of the backbone.")] = True,
    onnx: Annotated[
        bool, typer.Option(help="Also export the backbone to ONNX and time it with ONNX Runtime (extra 'onnx').")
    ] = True,
    index: Annotated[
        str | None, typer.Option(help="Gallery search of the GeoCLIP head (as terraloc predict --index).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """GeoCLIP prediction throughput with the real ViT-L/14 architecture (random weights time the same).

    Reports images/s end to end (JPEG decode → top-5 with place names) and the share of the time
    spent outside the backbone; optionally int8 dynamic quantisation of the backbone's Linear layers.
    """
    from terraloc.cli.options import renamed

    images = renamed(limit, images_old, new="--limit", old="--images") or 16
    try:
        import onnxruntime

        ort = f"onnxruntime {onnxruntime.__version__}" + ("" if onnx else " (not measured: --no-onnx)")
    except ImportError:
        ort, onnx = "not installed (pip install 'terraloc[onnx]'): not measured", False
    rows = []
    for s in [int(x) for x in sizes.split(",") if x.strip()]:
        err_console.print(f"measuring ViT-L/14 at {s} px on {images} images ...", markup=False, style="dim")
        rows.append(bench_one(s, images, batch_size, workers, quantize, onnx, index))
    result = {"benchmark": "predict", "model": "GeoCLIP head on CLIP ViT-L/14 (random weights)", "rows": rows,
              "onnxruntime": ort}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    t = Table(title="terraloc bench predict — GeoCLIP on ViT-L/14 (CPU)")
    cols = [
        ("px", "image_size"),
        ("images", "images"),
        ("batch", "batch_size"),
        ("threads", "torch_threads"),
        ("images/s", "images_per_s"),
        ("outside backbone", "outside_backbone_share"),
        ("fp32 backbone img/s", "fp32_backbone_images_per_s"),
        ("int8 backbone img/s", "int8_dynamic_backbone_images_per_s"),
        ("int8 speed-up", "int8_speedup"),
        ("int8 min cos", "int8_min_cosine_to_fp32"),
        ("ORT backbone img/s", "onnxruntime_backbone_images_per_s"),
        ("ORT speed-up", "onnxruntime_speedup"),
        ("ORT min cos", "onnxruntime_min_cosine_to_fp32"),
    ]
    for name, _ in cols:
        t.add_column(name, justify="right")
    for r in rows:
        vals = []
        for _, key in cols:
            v = r.get(key, "–")
            vals.append(f"{100 * v:.1f}%" if key == "outside_backbone_share" else str(v))
        t.add_row(*vals)
    out_console().print(t)
    out_console().print(f"ONNX Runtime: {ort}")
