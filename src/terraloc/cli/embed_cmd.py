"""``terraloc embed``: photos → Parquet parts of ``id, lat, lon, embedding`` (a training shard folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from terraloc.cli.app import app
from terraloc.cli.model_options import DeviceOption
from terraloc.config import DEFAULT_BACKBONE


@app.command("embed")
def embed_command(
    paths: Annotated[list[str] | None, typer.Argument(help="Photo files, folders or globs.")] = None,
    photos: Annotated[
        str | None,
        typer.Option(
            "--photos",
            help="Geotagged photos: a CSV/Parquet manifest (path or id + lat/lon columns; paths relative to it) "
            "or a folder or glob of photos with EXIF GPS.",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (resumes an unfinished run).")] = None,
    backbone: Annotated[
        str, typer.Option("--backbone", help="Image backbone spec (the same default as `terraloc predict`).")
    ] = DEFAULT_BACKBONE,
    coords: Annotated[
        bool,
        typer.Option(
            "--coords/--no-coords",
            help="Photos need coordinates (manifest lat/lon, or EXIF GPS); --no-coords: any photo, lat/lon empty.",
        ),
    ] = True,
    engine: Annotated[str, typer.Option("--engine", help="local (this process) or ray (actor pool).")] = "local",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else start one).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Ray actors, or compute threads for --engine local.")] = 2,
    threads: Annotated[int, typer.Option("--threads", help="Compute threads per Ray actor.")] = 1,
    gpus: Annotated[float | None, typer.Option("--gpus", help="GPUs per Ray actor (default: automatic).")] = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per backbone call.")] = 32,
    part_size: Annotated[int | None, typer.Option("--part-size", help="Photos per part file (default: by count).")] = (
        None
    ),
    id_col: Annotated[
        str | None, typer.Option("--id-col", help="Manifest id column (default: the path column as written).")
    ] = None,
    lat_col: Annotated[str | None, typer.Option("--lat-col", help="Manifest latitude column.")] = None,
    lon_col: Annotated[str | None, typer.Option("--lon-col", help="Manifest longitude column.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Draw a progress bar.")] = True,
    shard_rows_old: Annotated[
        int | None, typer.Option("--shard-rows", hidden=True, help="Old name of --part-size.")
    ] = None,
) -> None:
    """Embed photos with a backbone into resumable Parquet parts (readable by `terraloc train`); bad photos
    are listed in OUT/errors.csv and the run goes on."""
    from terraloc.cli.engine_view import print_summary, progress_bar, report_errors
    from terraloc.cli.options import renamed
    from terraloc.engine import EmbedSpec, make_engine, run_job
    from terraloc.engine.stream import open_work_items
    from terraloc.errors import InputError

    part_size = renamed(part_size, shard_rows_old, new="--part-size", old="--shard-rows")
    if out is None:
        raise InputError("missing option --out", field="out")
    spec_in: list[str] = list(paths or []) + ([photos] if photos else [])
    if not spec_in:
        raise InputError("give photos (paths, a folder, a glob or --photos MANIFEST)", field="photos")
    if batch_size < 1:
        raise InputError(f"must be at least 1, got {batch_size}", field="batch-size")
    eng = make_engine(engine, workers=workers, threads=threads, ray_address=ray_address, gpus=gpus, device=device)
    items = open_work_items(spec_in, id_col=id_col, lat_col=lat_col, lon_col=lon_col, require_coords=coords)
    spec = EmbedSpec(backbone, batch_size=batch_size, decode_threads=workers if engine == "local" else 1)
    with progress_bar("embedding", enabled=progress and not as_json) as bar:
        summary = run_job(spec, items, out, eng, part_size=part_size, on_progress=bar)
    if not as_json:
        report_errors(out)
    print_summary(summary, as_json)
