"""``terraloc predict``: where were these photos taken?"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from terraloc.cli.app import app, err_console, out_console
from terraloc.errors import InputError

FORMATS = ("table", "json", "csv", "geojson")


def expand_inputs(paths: list[Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """Images named by ``paths`` (files, folders searched recursively, CSV lists of paths).

    Returns ``(images, errors)``: image paths as strings (in order, duplicates removed) and
    ``(input, message)`` for inputs that name no image at all (an empty folder, a bad CSV).
    """
    import pandas as pd

    from terraloc.encoders.image.loading import find_images

    images: list[str] = []
    errors: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            images.append(p)

    for p in paths:
        if p.is_dir():
            try:
                for f in find_images(p):
                    add(str(f))
            except InputError as exc:
                errors.append((str(p), str(exc)))
        elif p.suffix.lower() == ".csv" and p.is_file():
            try:
                df = pd.read_csv(p, dtype=str, keep_default_na=False)
            except Exception as exc:
                errors.append((str(p), f"{p}: cannot read CSV list of images: {exc}"))
                continue
            low = {c.lower(): c for c in df.columns}
            col = next((low[c] for c in ("path", "image", "file", "filename") if c in low), None)
            if col is None:
                col = df.columns[0] if len(df.columns) else None
            if col is None or len(df) == 0:
                errors.append((str(p), f"{p}: CSV lists no images (expected a 'path' column)"))
                continue
            for v in df[col]:
                v = v.strip()
                if v:
                    q = Path(v)
                    add(str(q if q.is_absolute() else p.parent / q))
        else:
            add(str(p))
    return images, errors


def _table(preds: list[Any]) -> None:
    from rich.table import Table

    t = Table(title="terraloc predictions")
    for c in ("image", "rank", "lat", "lon", "probability", "place"):
        t.add_column(c, justify="right" if c in ("rank", "lat", "lon", "probability") else "left")
    from rich.markup import escape

    from terraloc.pipeline.outputs import confidence_words

    for p in preds:
        if not p.ok:
            t.add_row(p.image, "", "", "", "", f"[red]error: {p.error}[/red]")
            continue
        if p.abstained:
            t.add_row(p.image, "", "", "", "", f"[yellow]abstained ({escape(confidence_words(p.confidence))})[/yellow]")
            continue
        for c in p.candidates:
            place = ", ".join(x for x in (c.city, c.admin1, c.country) if x)
            t.add_row(
                p.image if c.rank == 1 else "",
                str(c.rank),
                f"{c.lat:.5f}",
                f"{c.lon:.5f}",
                f"{c.probability:.4g}",
                place
                + (f"\n[dim]{escape(confidence_words(p.confidence))}[/dim]" if c.rank == 1 and p.confidence else ""),
            )
    out_console().print(t)


@app.command("predict")
def predict_command(
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders (recursive) or CSV lists of paths.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Candidates per image.")] = 5,
    backbone: Annotated[
        str | None,
        typer.Option(help="Backbone: a local folder, a model name (terraloc models list) or efficientnet-lite0."),
    ] = None,
    head: Annotated[
        str | None,
        typer.Option(
            help="geoclip (GPS gallery), refdb (reference photos, needs --db) or geosurge (needs --checkpoint)."
        ),
    ] = None,
    fusion: Annotated[
        Path | None,
        typer.Option(
            help="Semantic-fusion checkpoint (terraloc fusion train) for --head geosurge; the GeoSURGE "
            "head defaults to geosurge.pt beside it."
        ),
    ] = None,
    segmenter: Annotated[str, typer.Option(help="Segmentation provider for --fusion: tflite or oneformer:DIR.")] = (
        "tflite"
    ),
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Trained GeoSURGE checkpoint (terraloc train geosurge).")
    ] = None,
    db: Annotated[Path | None, typer.Option("--db", help="Reference database folder (terraloc db build).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json (JSON Lines), csv or geojson.")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write results to this file (as they finish).")
    ] = None,
    map_html: Annotated[Path | None, typer.Option("--map", help="Also write an offline HTML map.")] = None,
    resume: Annotated[bool, typer.Option(help="Skip images already in --output.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per backbone call.")] = 16,
    workers: Annotated[int, typer.Option(help="JPEG decoding threads.")] = 2,
    ten_crop: Annotated[bool, typer.Option(help="Average the logits of ten crops (geoclip head).")] = False,
    places: Annotated[bool, typer.Option(help="Add offline place names.")] = True,
    reasoner: Annotated[
        str | None, typer.Option(help="rag: reason over nearest/farthest references (refdb head; see docs/rag.md).")
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="LLM for --reasoner rag: local[:NAME|:PATH.gguf] or http(s)://HOST/v1#MODEL.")
    ] = None,
    calibrator: Annotated[
        Path | None,
        typer.Option(help="Calibrator JSON (terraloc calibrate) for this configuration: adds confidence."),
    ] = None,
    min_confidence: Annotated[
        str | None,
        typer.Option(help="KM:P, e.g. 25:0.8: abstain (explicit abstained row) when P(error <= KM) < P."),
    ] = None,
    distinct_km: Annotated[
        float, typer.Option(help="Merge candidates within this many km of a better one (0 = raw list).")
    ] = 25.0,
) -> None:
    """Predict where photos were taken: ranked locations with probabilities and place names.

    Exits with status 2 when any input failed (each failure is reported on its own line; the
    others are still predicted).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from terraloc.pipeline import Geolocator, GeolocatorConfig
    from terraloc.pipeline.outputs import StreamWriter, done_images, geojson, html_map, rewrite_without
    from terraloc.pipeline.types import ImagePrediction

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise InputError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}", field="format")
    if top_k < 1:
        raise InputError(f"must be at least 1, got {top_k}", field="top-k")
    if resume and output is None:
        raise InputError("--resume needs --output FILE", field="resume")
    if resume and fmt not in ("csv", "json"):
        raise InputError("--resume works with --format csv or json", field="resume")
    if head is None:
        head = (
            "refdb" if db is not None else ("geosurge" if checkpoint is not None or fusion is not None else "geoclip")
        )
    if backbone is None:
        if head == "refdb" and db is not None and (db / "manifest.json").exists():
            backbone = json.loads((db / "manifest.json").read_text())["backbone"]["id"]
        else:
            backbone = "clip-vit-large-patch14"

    images, input_errors = expand_inputs(paths)
    done: set[str] = set()
    if resume and output is not None and output.exists():
        done = done_images(output, fmt)
        rewrite_without(output, fmt, done)
    todo = [p for p in images if p not in done]

    for _src, msg in input_errors:
        err_console.print(f"error: {msg}", markup=False)
    config = GeolocatorConfig(
        backbone=backbone,
        head=head,
        refdb=str(db) if db is not None else None,
        checkpoint=str(checkpoint) if checkpoint is not None else None,
        fusion=str(fusion) if fusion is not None else None,
        segmenter=segmenter,
        ten_crop=ten_crop,
        batch_size=batch_size,
        workers=workers,
        places=places,
        reasoner=reasoner,
        llm=llm,
        calibrator=str(calibrator) if calibrator is not None else None,
        distinct_km=distinct_km,
        min_confidence=min_confidence,
    )
    if min_confidence is not None:
        from terraloc.confidence import parse_min_confidence

        parse_min_confidence(min_confidence)  # a bad value fails before the model loads
        if calibrator is None:
            raise InputError("--min-confidence needs --calibrator FILE", field="min-confidence")
    if distinct_km < 0:
        raise InputError(f"must be >= 0, got {distinct_km}", field="distinct-km")
    geo = Geolocator(config) if todo else None

    failed = len(input_errors)
    results: list[ImagePrediction] = []
    stream = fmt in ("csv", "json")
    with contextlib.ExitStack() as stack:
        writer = None
        if stream:
            if output is not None:
                append = resume and output.exists() and output.stat().st_size > 0
                fh = stack.enter_context(open(output, "a" if append else "w", encoding="utf-8", newline=""))
                writer = StreamWriter(fh, fmt, write_header=not append)
            else:
                writer = StreamWriter(sys.stdout, fmt)
        for src, msg in input_errors:
            r = ImagePrediction(src, [], msg, geo.model_info if geo else {})
            results.append(r)
            if writer:
                writer.write(r)
        progress = Progress(
            TextColumn("predicting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=len(todo) <= 8,
        )
        with progress:
            task = progress.add_task("predict", total=len(todo))
            if geo is not None and todo:
                for r in geo.predict_iter(todo, top_k=top_k):
                    if not r.ok:
                        failed += 1
                        progress.console.print(f"error: {r.error}", markup=False)
                    results.append(r)
                    if writer:
                        writer.write(r)
                    progress.advance(task)
    if not stream:
        if fmt == "table":
            if output is not None:
                raise InputError("--format table prints to the terminal; use csv/json/geojson with --output")
            _table(results)
        else:
            text = json.dumps(geojson(results), ensure_ascii=False)
            if output is not None:
                from terraloc.io import atomic_write_text

                atomic_write_text(output, text + "\n")
            else:
                sys.stdout.write(text + "\n")
    if map_html is not None:
        from terraloc.io import atomic_write_text

        atomic_write_text(map_html, html_map(results))
    n_ok = sum(1 for r in results if r.ok and not r.abstained)
    skipped = f", {len(done)} already done" if done else ""
    n_abs = sum(1 for r in results if r.abstained)
    abstained = f", {n_abs} abstained (below --min-confidence {min_confidence})" if n_abs else ""
    err_console.print(f"{n_ok} predicted, {failed} failed{abstained}{skipped}", markup=False, style="dim")
    if failed:
        raise typer.Exit(2)
