"""``terraloc bench predict``: end-to-end prediction throughput with the ViT-L/14 architecture."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from terraloc.cli.app import bench_app, err_console, out_console


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
    from terraloc.bench.predict import bench_one
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
