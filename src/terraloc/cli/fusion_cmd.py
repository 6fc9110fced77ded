"""``terraloc fusion ...`` (training, ablation) and ``terraloc bench fusion`` (step time, memory, overhead)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from terraloc.cli.app import app, bench_app, err_console, out_console
from terraloc.errors import InputError

fusion_app = typer.Typer(help="Semantic fusion (GeoSURGE): training and the 0-3 block ablation.", no_args_is_help=True)
app.add_typer(fusion_app, name="fusion")

PHOTOS_HELP = (
    "Photos with ground truth: a folder with metadata.csv (IMG_ID,LAT,LON), a CSV/Parquet manifest, or a "
    "folder/glob of EXIF-geotagged photos (default: the shared Im2GPS3k photos)."
)
BACKBONE_HELP = (
    "tiny (random CLIP, width 32, 2 layers, patch 32, 224 px), vit-l-14-336 (random ViT-L/14 at 336 px, "
    "timing only), or a local Hugging Face CLIP folder / terraloc backbone spec"
)


def _parse_blocks(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {text!r}", field="--blocks") from None
    if not vals or any(v < 0 or v > 12 for v in vals):
        raise InputError("block counts must be between 0 and 12", field="--blocks")
    return vals


def _photo_set(progress: Any, folder: str | Path, limit: int | None, segmenter: str, minimum: int) -> Any:
    """Photos with ground truth and their (cached) maps, with a progress task; at least ``minimum`` of them."""
    from terraloc.models.fusion_train import load_photo_set

    t = progress.add_task("segmenting (cached)", total=None)
    data = load_photo_set(folder, limit=limit, segmenter_spec=segmenter,
                          progress=lambda i, n: progress.update(t, completed=i, total=n))  # fmt: skip
    if len(data.paths) < minimum:
        raise InputError(
            f"need at least {minimum} readable photos with ground truth, found {len(data.paths)}", path=folder
        )
    return data


@fusion_app.command("train")
def train_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: fusion.pt, geosurge.pt, metrics.json.")],
    photos: Annotated[str | None, typer.Option(help=PHOTOS_HELP)] = None,
    backbone: Annotated[str, typer.Option(help=BACKBONE_HELP)] = "tiny",
    blocks: Annotated[int, typer.Option(help="Fusion blocks.")] = 3,
    segmenter: Annotated[str, typer.Option(help="Segmentation provider spec.")] = "tflite",
    limit: Annotated[int | None, typer.Option(help="Use at most this many photos.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Photos per step.")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    tau_max: Annotated[str, typer.Option("--tau-max", help="Geocell split thresholds per level, coarse to fine.")] = (
        "100,40,15"
    ),
    tau_min: Annotated[int, typer.Option("--tau-min", help="Drop cells with fewer photos.")] = 1,
    ignore: Annotated[str, typer.Option(help="ADE20K classes to mask, e.g. person,car ('' = none).")] = "",
    device: Annotated[str, typer.Option(help="Torch device for training: cpu or cuda.")] = "cpu",
) -> None:
    """Train fusion + the last CLIP block + a GeoSURGE head from photos (backbone in the loop).

    Writes OUT/fusion.pt (for `terraloc predict --head geosurge --fusion OUT/fusion.pt`) and
    OUT/geosurge.pt (the GeoSURGE head over the fused 768-d feature).
    """
    import torch
    from rich.progress import Progress

    from terraloc.config import shared_path
    from terraloc.encoders.segmentation import class_ids
    from terraloc.models.fused_encoder import FusedImageEncoder, make_clip
    from terraloc.models.fusion import FusionConfig
    from terraloc.models.fusion_train import save_fused_run, train_fused_geosurge

    if device != "cpu" and not (device.startswith("cuda") and torch.cuda.is_available()):
        raise InputError(
            f"device {device!r} is not available here (use cpu, or cuda on a GPU machine)", field="--device"
        )
    try:
        taus = tuple(int(t) for t in tau_max.split(","))
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {tau_max!r}", field="--tau-max") from None
    folder = photos if photos else shared_path("data", "photos", "im2gps3k_dev")
    ignore_ids = tuple(class_ids([s for s in ignore.split(",") if s.strip()]))
    clip = make_clip(backbone)
    enc = FusedImageEncoder(clip, FusionConfig(num_blocks=blocks, ignore_classes=ignore_ids))
    with Progress(console=err_console, transient=True) as progress:
        data = _photo_set(progress, folder, limit, segmenter, minimum=2)
        t2 = progress.add_task("training", total=None)
        model, partition, losses = train_fused_geosurge(
            enc, data, taus, tau_min, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
            on_step=lambda s, n, loss: progress.update(t2, completed=s, total=n, description=f"training {loss:.2f}"),
        )  # fmt: skip
    save_fused_run(out, enc, model, partition, losses, len(data.paths), {"backbone": backbone, "segmenter": segmenter})
    out_console().print(
        f"trained on {len(data.paths)} photos, {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
        f"geocells per level {partition.sizes}; wrote {out}/fusion.pt and {out}/geosurge.pt"
    )


@fusion_app.command("ablation")
def ablation_command(
    photos: Annotated[str | None, typer.Option(help=PHOTOS_HELP)] = None,
    blocks: Annotated[str, typer.Option(help="Fusion block counts to compare, e.g. 0,1,2,3.")] = "0,1,2,3",
    backbone: Annotated[str, typer.Option(help=BACKBONE_HELP)] = "tiny",
    segmenter: Annotated[str, typer.Option(help="Segmentation provider spec.")] = "tflite",
    limit: Annotated[int | None, typer.Option(help="Use at most this many photos.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs per block count.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Photos per step.")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    ignore: Annotated[str, typer.Option(help="ADE20K classes to mask, e.g. person,car ('' = none).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fusion ablation: train the fused encoder (last CLIP block + fusion + geocell head) with 0..N
    blocks on 80 % of the photos and report accuracy on the other 20 %."""
    from rich.progress import Progress
    from rich.table import Table

    from terraloc.config import shared_path
    from terraloc.encoders.segmentation import class_ids
    from terraloc.evaluate.metrics import THRESHOLD_KEYS
    from terraloc.models.fused_encoder import FusedImageEncoder, make_clip
    from terraloc.models.fusion import FusionConfig
    from terraloc.models.fusion_train import run_ablation

    counts = _parse_blocks(blocks)
    folder = photos if photos else shared_path("data", "photos", "im2gps3k_dev")
    ignore_ids = tuple(class_ids([s for s in ignore.split(",") if s.strip()]))
    with Progress(console=err_console, transient=True) as progress:
        data = _photo_set(progress, folder, limit, segmenter, minimum=5)
        t2 = progress.add_task("training", total=None)

        def make(nb: int) -> FusedImageEncoder:
            return FusedImageEncoder(make_clip(backbone), FusionConfig(num_blocks=nb, ignore_classes=ignore_ids))

        results = run_ablation(
            make, data, counts, epochs=epochs, batch_size=batch_size, lr=lr,
            on_step=lambda s, n, loss: progress.update(t2, completed=s, total=n, description=f"training {loss:.2f}"),
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"backbone": backbone, "photos": str(folder), "results": results}))
        return
    th = THRESHOLD_KEYS
    table = Table(
        title=f"fusion ablation ({backbone}, {results[0]['train_images']} train / {results[0]['test_images']} test)"
    )
    for col in ("blocks", *[f"{t} km" for t in th], "median km", "train loss", "s/step"):
        table.add_column(col, justify="right")
    for r in results:
        ev = r["eval"]
        med = ev.get("median_km")
        table.add_row(
            str(r["blocks"]),
            *[f"{ev['accuracy'][t]:.1f}" for t in th],
            "–" if med is None else f"{med:.0f}",
            f"{r['train_loss_last']:.2f}",
            f"{r['seconds_per_step']:.2f}",
        )
    console = out_console()
    console.print(table)
    console.print(
        "0 blocks = CLIP CLS -> LayerNorm -> Linear (no segmentation); tiny random backbones make these numbers noise."
    )


@bench_app.command("fusion")
def bench_fusion_command(
    backbone: Annotated[list[str] | None, typer.Option(help=BACKBONE_HELP + " (repeatable)")] = None,
    blocks: Annotated[int, typer.Option(help="Fusion blocks.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = 2,
    steps: Annotated[int, typer.Option(help="Timed training steps (after one warm-up step).")] = 3,
    reps: Annotated[int, typer.Option(help="Timed single-image inference repetitions.")] = 3,
    cells: Annotated[str, typer.Option(help="Geocell partition for the head.")] = "cells_50_5000",
    segment: Annotated[bool, typer.Option("--segment/--no-segment", help="Also time TFLite segmentation.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time and memory of a fused training step (backbone in the loop, last block trainable) and the
    extra inference cost of fusion per image relative to the backbone alone."""
    from rich.table import Table

    from terraloc.bench.fusion import bench_fusion

    result = bench_fusion(
        backbone or ["tiny", "vit-l-14-336"], blocks=blocks, batch_size=batch_size, steps=steps, reps=reps,
        cells=cells, segment=segment, log=lambda m: err_console.print(m, markup=False),
    )  # fmt: skip
    rows, seg_ms = result["rows"], result["tflite_segment_ms"]
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"fusion ({blocks} blocks): training step (batch {batch_size}) and inference per image, CPU")
    for col in ("backbone", "tokens", "step s", "step peak MiB", "trainable", "backbone ms", "fusion ms",
                "fusion overhead", "+ TFLite seg"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        with_seg = "–" if seg_ms is None else f"{100 * (r['infer_fusion_ms'] + seg_ms) / r['infer_backbone_ms']:.0f}%"
        table.add_row(
            f"{r['backbone']} ({r['image_size']} px)",
            f"{r['clip_tokens']}x{r['clip_width']}",
            f"{r['train_step_s']:.2f}",
            f"{r['train_step_peak_rss_delta_mib']:.0f}",
            f"{r['trainable_params'] / 1e6:.2f}M",
            f"{r['infer_backbone_ms']:.1f}",
            f"{r['infer_fusion_ms']:.1f}",
            f"{r['fusion_overhead_pct']:.1f}%",
            with_seg,
        )
    console = out_console()
    console.print(table)
    console.print(
        f"torch threads {result['threads']} of {result['cpu_count']} CPUs; "
        "step = forward (frozen prefix under no_grad) + backward + AdamW on last CLIP block, fusion and a "
        "geocell head; step peak = resident memory above the pre-step level; "
        f"TFLite segmentation {seg_ms} ms/image (not part of 'fusion ms')."
    )
