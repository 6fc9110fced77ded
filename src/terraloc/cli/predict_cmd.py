"""``terraloc predict``: where were these photos taken?"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from terraloc.cli.app import app, err_console, out_console
from terraloc.cli.model_options import (
    BackboneOption,
    CalibratorOption,
    CheckpointOption,
    DbOption,
    DeviceOption,
    DistinctKmOption,
    FusionOption,
    GalleryOption,
    HeadOption,
    IndexOption,
    LlmOption,
    MinConfidenceOption,
    ModelOption,
    PlacesOption,
    ReasonerOption,
    SegmenterOption,
    TenCropOption,
)
from terraloc.errors import InputError

FORMATS = ("table", "json", "csv", "geojson")  # "json" = JSON Lines (--format jsonl)


def expand_inputs(paths: list[Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """Images named by ``paths``: files, and what the one photo-input reader
    (:func:`terraloc.inputs.read_photo_inputs`) reads — folders (recursive), globs, CSV/Parquet lists.

    Returns ``(images, errors)``: image paths as strings (in order, duplicates removed) and
    ``(input, message)`` for inputs that name no image at all (an empty folder, a bad CSV) or
    photos that cannot be used (listed but missing, AVIF, unreadable).
    """
    from terraloc.inputs import MANIFEST_SUFFIXES, looks_like_glob, read_photo_inputs

    images: list[str] = []
    errors: list[tuple[str, str]] = []
    notes: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            images.append(p)

    for p in paths:
        text = str(p)
        glob = not p.exists() and looks_like_glob(text)
        if not (p.is_dir() or p.suffix.lower() in MANIFEST_SUFFIXES or glob):
            add(text)  # a file named explicitly: the decoder reports what it cannot read
            continue
        try:  # every item it does not use comes back with the reason
            found = read_photo_inputs(text)
        except InputError as exc:
            errors.append((text, str(exc)))
            continue
        for f in found.paths:
            add(f)
        # photos that cannot be used fail; other files in a folder are noted
        for item, reason in found.skipped:
            if reason.startswith(("not an image", "hidden")):
                notes.append(f"{item}: {reason}")
            else:
                errors.append((item, f"{item}: skipped: {reason}"))
    if notes:
        from terraloc.cli.app import err_console

        more = f" and {len(notes) - 3} more" if len(notes) > 3 else ""
        err_console.print(
            f"note: skipped {len(notes)} file(s) that are not photos: {'; '.join(notes[:3])}{more}", markup=False
        )
    return images, errors


def build_progress() -> Any:
    """A ``progress(stage, done, total)`` callback printing first-time gallery/index builds on stderr."""
    last: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if last.get(stage) == pct:
            return
        last[stage] = pct
        if stage.startswith("index"):
            msg = f"{stage}: {'building or loading (built once, cached with the gallery)' if done < total else 'ready'}"
        else:
            msg = f"{stage}: {done}/{total} rows"
        err_console.print(msg, markup=False, style="dim")

    return report


def _table(preds: list[Any]) -> None:
    from rich.table import Table

    t = Table(title="terraloc predictions")
    for c in ("image", "rank", "lat", "lon", "probability", "place"):
        t.add_column(c, justify="right" if c in ("rank", "lat", "lon", "probability") else "left")
    from rich.markup import escape

    from terraloc.pipeline.outputs import confidence_words

    for p in preds:
        image = p.image.encode("utf-8", "backslashreplace").decode("utf-8")  # undecodable name bytes as \xNN
        if not p.ok:
            t.add_row(image, "", "", "", "", f"[red]error: {p.error}[/red]")
            continue
        if p.abstained:
            t.add_row(p.image, "", "", "", "", f"[yellow]abstained ({escape(confidence_words(p.confidence))})[/yellow]")
            continue
        words = confidence_words(p.confidence)
        for c in p.candidates:
            place = ", ".join(x for x in (c.city, c.admin1, c.country) if x)
            t.add_row(
                image if c.rank == 1 else "",
                str(c.rank),
                f"{c.lat:.5f}",
                f"{c.lon:.5f}",
                f"{c.probability:.4g}",
                place + (f"\n[dim]{escape(words)}[/dim]" if c.rank == 1 and words else ""),
            )
    out_console().print(t)


def output_format(fmt: str | None, output: Path | None, *, folder_ok: bool = False) -> str:
    """The prediction format, checked before any work: ``--format`` (``jsonl`` → ``json``: JSON Lines
    inside), else --out's suffix (:data:`~terraloc.pipeline.outputs.FORMAT_BY_SUFFIX`), else ``table``.

    ``folder_ok``: --out may be a folder (the engine's job folder; ``table`` then means no merged file).
    """
    from terraloc.cli.options import deprecated
    from terraloc.pipeline.outputs import FORMAT_BY_SUFFIX

    if fmt is not None and fmt.lower() == "json":
        deprecated("--format json", "--format jsonl", "the same JSON Lines")
    if fmt is None:
        fmt = FORMAT_BY_SUFFIX.get(output.suffix.lower(), "table") if output is not None else "table"
    fmt = "json" if fmt.lower() in ("json", "jsonl") else fmt.lower()
    if fmt not in FORMATS:
        raise InputError(f"unknown format '{fmt}'; choose one of table, csv, jsonl, geojson", field="--format")
    if fmt == "table" and output is not None and not folder_ok:
        raise InputError(
            f"cannot tell the format of '{output.name}': give --format csv|jsonl|geojson, or an --out name "
            "ending in .csv, .jsonl or .geojson (the table is printed to the terminal)",
            field="format",
        )
    return fmt


@app.command("predict")
def predict_command(
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders (recursive) or CSV lists of paths.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Candidates per image.")] = 5,
    model: ModelOption = None,
    backbone: BackboneOption = None,
    head: HeadOption = None,
    gallery: GalleryOption = None,
    index: IndexOption = None,
    shortlist: Annotated[
        int | None, typer.Option(help="Rows an approximate --index retrieves per image (softmax support).")
    ] = None,
    fusion: FusionOption = None,
    segmenter: SegmenterOption = None,
    checkpoint: CheckpointOption = None,
    db: DbOption = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="table, csv, jsonl (JSON Lines) or geojson [default: from --out's suffix .csv/.jsonl/.geojson, "
            "else table].",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write results to this file (as they finish).")
    ] = None,
    output_old: Annotated[Path | None, typer.Option("--output", hidden=True, help="Old name of --out.")] = None,
    map_html: Annotated[Path | None, typer.Option("--map", help="Also write an offline HTML map.")] = None,
    resume: Annotated[bool, typer.Option(help="Skip images already in --out.")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Images per backbone call [default: 16].")] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding threads [default: 2].")] = None,
    ten_crop: TenCropOption = None,
    places: PlacesOption = None,
    reasoner: ReasonerOption = None,
    llm: LlmOption = None,
    calibrator: CalibratorOption = None,
    min_confidence: MinConfidenceOption = None,
    distinct_km: DistinctKmOption = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="Bulk mode: local or ray. Writes resumable Parquet parts (to --out DIR, or FILE.parts/ beside "
            "--out FILE) and merges them into FILE; --workers = Ray actors; see docs/engine.md."
        ),
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else start one).")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", help="Compute threads per Ray actor (--engine ray).")] = 1,
    part_size: Annotated[int | None, typer.Option("--part-size", help="Photos per part file (--engine).")] = None,
    gpus: Annotated[float | None, typer.Option("--gpus", help="GPUs per Ray actor (default: automatic).")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Predict where photos were taken: ranked locations with probabilities and place names.

    Exits with status 2 when any input failed (each failure is reported on its own line; the
    others are still predicted).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from terraloc.cli.options import renamed
    from terraloc.pipeline import Geolocator, resolve_config
    from terraloc.pipeline.outputs import PredictionFile, geojson_text, html_map
    from terraloc.pipeline.types import ImagePrediction

    output = renamed(out, output_old, new="--out", old="--output")
    fmt = output_format(fmt, output, folder_ok=engine is not None)
    from terraloc.device import resolve_device

    # checked before any work; Ray actors take the device their --gpus give them
    device = resolve_device(device, here=engine != "ray")
    if top_k < 1:
        raise InputError(f"must be at least 1, got {top_k}", field="top-k")
    if resume and output is None:
        raise InputError("--resume needs --out FILE", field="resume")
    if resume and fmt not in ("csv", "json"):
        raise InputError("--resume works with --format csv or jsonl", field="resume")
    config, source = resolve_config(
        model,
        backbone=backbone,
        head=head,
        gallery=gallery,
        index=index,
        shortlist=shortlist,
        db=db,
        checkpoint=checkpoint,
        fusion=fusion,
        segmenter=segmenter,
        ten_crop=ten_crop,
        batch_size=batch_size,
        workers=workers,
        places=places,
        reasoner=reasoner,
        llm=llm,
        calibrator=calibrator,
        min_confidence=min_confidence,
        distinct_km=distinct_km,
    )
    if config.min_confidence is not None and config.calibrator is None:
        raise InputError("--min-confidence needs --calibrator FILE", field="min-confidence")

    if engine is not None:
        from terraloc.cli.engine_predict import predict_with_engine

        n_workers = 2 if workers is None else workers
        # each worker rebuilds the geolocator from this configuration (decoding threads: the local
        # engine's --workers, one per Ray actor)
        config_json = config.replace(workers=n_workers if engine == "local" else 1).to_json()
        code = predict_with_engine(
            [str(p) for p in paths], config_json, top_k, fmt, output, map_html, engine, ray_address,
            max(1, n_workers), threads, part_size, gpus, device,
        )  # fmt: skip
        if code:
            raise typer.Exit(code)
        return

    images, input_errors = expand_inputs(paths)
    # the one writer of csv/json output: whole records only; --resume keeps complete ones
    sink = PredictionFile(output, fmt, top_k, resume) if fmt in ("csv", "json") else None
    done = sink.done if sink is not None else set()
    todo = [p for p in images if p not in done]

    for _src, msg in input_errors:
        err_console.print(f"error: {msg}", markup=False)
    from terraloc.allocator import keep_freed_memory

    keep_freed_memory()  # batch memory kept mapped between batches (fewer page faults)
    geo = Geolocator(config, source=source, progress=build_progress()).to(device) if todo else None

    failed = len(input_errors)
    results: list[ImagePrediction] = []
    stream = fmt in ("csv", "json")
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(sink) if sink is not None else None
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
            _table(results)
        else:
            text = geojson_text(results)
            if output is not None:
                from terraloc.io import atomic_write_text

                atomic_write_text(output, text)
            else:
                sys.stdout.write(text)
    if map_html is not None:
        from terraloc.io import atomic_write_text

        atomic_write_text(map_html, html_map(results))
    n_ok = sum(1 for r in results if r.ok and not r.abstained)
    skipped = f", {len(done)} already done" if done else ""
    n_abs = sum(1 for r in results if r.abstained)
    abstained = f", {n_abs} abstained (below --min-confidence {config.min_confidence})" if n_abs else ""
    err_console.print(f"{n_ok} predicted, {failed} failed{abstained}{skipped}", markup=False, style="dim")
    if failed:
        raise typer.Exit(2)
