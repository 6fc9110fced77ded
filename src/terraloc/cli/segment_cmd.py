"""``terraloc segment``: ADE20K segmentation maps (PNG of class ids) and colourised previews;
``terraloc bench segment``: segmentation throughput."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from terraloc.cli.app import app, bench_app, err_console, out_console
from terraloc.errors import InputError, TerralocError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def expand_images(paths: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, non-recursive)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        else:
            out.append(p)
    return out


def _progress():  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


@app.command("segment")
def segment_command(
    paths: Annotated[list[Path], typer.Argument(help="Photos or folders of photos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for maps and previews.")],
    segmenter: Annotated[
        str, typer.Option("--segmenter", help="tflite (shared DeepLabv3 ADE20K), tflite:FILE or oneformer:DIR.")
    ] = "tflite",
    preview: Annotated[bool, typer.Option("--preview/--no-preview", help="Write colourised previews.")] = True,
    top: Annotated[int, typer.Option(help="Classes listed in the preview legend and the summary.")] = 8,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Use the map cache in TERRALOC_HOME.")] = True,
    threads: Annotated[int | None, typer.Option(help="Segmentation threads (TFLite).")] = None,
) -> None:
    """Segment photos into ADE20K classes.

    Writes, per photo, OUT/<stem>.seg.png (8-bit PNG whose pixel values are ADE20K ids 0..149,
    255 = unlabelled) and OUT/<stem>.preview.png, plus OUT/summary.jsonl (top classes per photo).
    A bad photo prints one error line and the batch goes on; the exit status is 2 if any failed.
    """
    from terraloc.encoders.segmentation import (
        SegmentationCache,
        class_histogram,
        class_name,
        load_image,
        load_segmenter,
        save_map_png,
    )
    from terraloc.encoders.segmentation.preview import preview as make_preview
    from terraloc.io import atomic_write, atomic_write_text

    if top < 1:
        raise InputError("must be at least 1", field="--top")
    files = expand_images(paths)
    if not files:
        raise InputError("no images found", field="PATH")
    seg = load_segmenter(segmenter, num_threads=threads)
    cached = SegmentationCache(seg) if cache else None
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    rows: list[dict] = []
    stems: dict[str, int] = {}
    with _progress() as progress:
        task = progress.add_task("segmenting", total=len(files))
        for f in files:
            try:
                image = load_image(f)
                seg_map = cached.get(f, image)[0] if cached is not None else seg.segment(image)
                stem = f.stem
                if stem in stems:  # same name from two folders
                    stems[stem] += 1
                    stem = f"{stem}-{stems[stem]}"
                else:
                    stems[stem] = 0
                save_map_png(out / f"{stem}.seg.png", seg_map)
                if preview:
                    pv = make_preview(image, seg_map, top=top)
                    with atomic_write(out / f"{stem}.preview.png", "wb") as fh:
                        pv.save(fh, format="PNG")
                hist = class_histogram(seg_map)[:top]
                rows.append(
                    {
                        "image": str(f),
                        "map": f"{stem}.seg.png",
                        "height": int(seg_map.shape[0]),
                        "width": int(seg_map.shape[1]),
                        "top_classes": [{"id": c, "name": class_name(c), "fraction": round(p, 4)} for c, p in hist],
                    }
                )
            except TerralocError as exc:
                failures += 1
                err_console.print(f"error: {exc}", markup=False)
            progress.advance(task)
    atomic_write_text(out / "summary.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    out_console().print(
        f"segmented {len(rows)} of {len(files)} photo(s) with {seg.provider_id} -> {out}/"
        + (f"; {failures} failed" if failures else "")
    )
    if failures:
        raise typer.Exit(2)


@bench_app.command("segment")
def bench_segment_command(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Photos or folders (default: the 300 shared Im2GPS3k photos).")
    ] = None,
    segmenter: Annotated[str, typer.Option("--segmenter", help="Provider spec (see `terraloc segment`).")] = "tflite",
    limit: Annotated[int | None, typer.Option(help="Use at most this many photos.")] = None,
    threads: Annotated[int | None, typer.Option(help="Segmentation threads (TFLite).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Segmentation throughput (images/s, no cache): decoding and segmentation timed separately."""
    import os
    import time

    from rich.table import Table

    from terraloc.config import shared_path
    from terraloc.encoders.segmentation import class_histogram, class_name, load_image, load_segmenter

    files = expand_images(paths or [shared_path("data", "photos", "im2gps3k_dev")])[: limit or None]
    if not files:
        raise InputError("no images found", field="PATH")
    seg = load_segmenter(segmenter, num_threads=threads)
    seg.segment(load_image(files[0]))  # warm-up (allocations, XNNPACK packing)
    t_load = t_seg = 0.0
    counts: dict[str, int] = {}
    n = 0
    with _progress() as progress:
        task = progress.add_task("segmenting", total=len(files))
        for f in files:
            t0 = time.perf_counter()
            try:
                image = load_image(f)
            except TerralocError as exc:
                err_console.print(f"error: {exc}", markup=False)
                progress.advance(task)
                continue
            t1 = time.perf_counter()
            m = seg.segment(image)
            t_seg += time.perf_counter() - t1
            t_load += t1 - t0
            n += 1
            for c, _ in class_histogram(m)[:3]:
                counts[class_name(c)] = counts.get(class_name(c), 0) + 1
            progress.advance(task)
    result: dict[str, Any] = {
        "provider": seg.provider_id,
        "images": n,
        "threads": threads or min(4, os.cpu_count() or 1),
        "cpu_count": os.cpu_count(),
        "seconds_segment": round(t_seg, 2),
        "seconds_decode": round(t_load, 2),
        "images_per_s": round(n / t_seg, 2) if t_seg else None,
        "images_per_s_with_decode": round(n / (t_seg + t_load), 2) if t_seg else None,
        "ms_per_image": round(1000 * t_seg / n, 1) if n else None,
        "top3_class_frequency": dict(sorted(counts.items(), key=lambda kv: -kv[1])[:12]),
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"segmentation throughput: {seg.provider_id}")
    for col in ("images", "threads", "images/s", "images/s incl. decode", "ms/image"):
        table.add_column(col, justify="right")
    table.add_row(
        str(n),
        str(result["threads"]),
        str(result["images_per_s"]),
        str(result["images_per_s_with_decode"]),
        str(result["ms_per_image"]),
    )
    console = out_console()
    console.print(table)
    console.print(
        "photos with the class among their top 3: "
        + ", ".join(f"{k} {v}" for k, v in result["top3_class_frequency"].items())
    )
