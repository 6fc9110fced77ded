"""``terraloc db build|info``: reference-photo databases (embeddings + search index + Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from terraloc.cli.app import app, err_console
from terraloc.cli.model_options import DeviceOption

db_app = typer.Typer(help="Reference-photo databases for the kNN (refdb) head.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("build")
def db_build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Database folder to create (resumes an unfinished build).")],
    photos: Annotated[
        str | None,
        typer.Option(
            "--photos",
            help="Geotagged photos: a CSV/Parquet manifest (path or id + lat/lon columns, e.g. metadata.csv), "
            "or a folder or glob of photos with EXIF GPS.",
        ),
    ] = None,
    backbone: Annotated[str, typer.Option(help="Backbone spec (folder, model name, efficientnet-lite0).")] = (
        "efficientnet-lite0"
    ),
    index: Annotated[
        str,
        typer.Option(
            "--index",
            help="Search index the database is searched with: flat (exact), hierarchical@OPTIONS or a FAISS "
            "factory string with @PARAMS, e.g. 'IVF1024,PQ32@nprobe=16' for a large database.",
        ),
    ] = "flat",
    id_col: Annotated[str | None, typer.Option(help="Manifest id/path column (default: detected).")] = None,
    lat_col: Annotated[str | None, typer.Option(help="Manifest latitude column (default: detected).")] = None,
    lon_col: Annotated[str | None, typer.Option(help="Manifest longitude column (default: detected).")] = None,
    part_size: Annotated[
        int | None, typer.Option("--part-size", help="Photos per resumable part (default: by count).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per backbone call.")] = 16,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (actor pool; see docs/engine.md).")] = (
        "local"
    ),
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else start one).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Ray actors, or compute + decoding threads for --engine local.")] = 2,
    threads: Annotated[int, typer.Option(help="Compute threads per Ray actor.")] = 1,
    gpus: Annotated[float | None, typer.Option("--gpus", help="GPUs per Ray actor (default: automatic).")] = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Draw a progress bar.")] = True,
    images_old: Annotated[str | None, typer.Option("--images", hidden=True, help="Old name of --photos.")] = None,
    shard_size_old: Annotated[
        int | None, typer.Option("--shard-size", hidden=True, help="Old name of --part-size.")
    ] = None,
) -> None:
    """Embed geotagged photos into a FAISS index + Parquet table; photos left out are listed in OUT/skipped.csv."""
    from terraloc.cli.engine_view import print_summary, progress_bar
    from terraloc.cli.options import renamed
    from terraloc.engine import make_engine
    from terraloc.engine.refdb_build import build_refdb, geotagged_items
    from terraloc.errors import InputError
    from terraloc.inputs import NoPhotosError
    from terraloc.search.refdb import write_skipped

    spec = renamed(photos, images_old, new="--photos", old="--images", required=True)
    part_size = renamed(part_size, shard_size_old, new="--part-size", old="--shard-size")
    eng = make_engine(engine, workers=workers, threads=threads, ray_address=ray_address, gpus=gpus, device=device)
    try:
        items = geotagged_items(spec, id_col=id_col, lat_col=lat_col, lon_col=lon_col)
    except NoPhotosError as exc:
        write_skipped(out / "skipped.csv", exc.skipped)
        raise InputError(f"{exc.problem}; skipped list written to {out / 'skipped.csv'}", path=exc.path) from None
    with progress_bar("embedding", enabled=progress and not as_json) as bar:
        res = build_refdb(
            items,
            backbone,
            out,
            eng,
            index=index,
            part_size=part_size,
            batch_size=batch_size,
            decode_threads=workers if engine == "local" else 1,
            on_progress=bar,
        )
    skipped = res["skipped"]
    if not as_json:
        for path, reason in skipped[:20]:
            err_console.print(f"skipped: {path}: {reason}", markup=False)
        if len(skipped) > 20:
            err_console.print(f"... and {len(skipped) - 20} more", markup=False)
        if skipped:
            err_console.print(f"skipped list: {out / 'skipped.csv'}", markup=False)
    print_summary(res["summary"], as_json, {"n": res["n"], "index": res["index"], "out": str(out)})
    if not as_json:
        typer.echo(
            f"built {out}: {res['n']} reference photos, {len(skipped)} skipped, backbone {backbone}, "
            f"index {res['index']} ({res['seconds']:.1f} s)"
        )
    if skipped:  # like predict: any skipped input -> exit 2 (the database is still written)
        err_console.print(f"{len(skipped)} input(s) skipped (listed above and in {out / 'skipped.csv'})", markup=False)
        raise typer.Exit(2)


@db_app.command("info")
def db_info(path: Annotated[Path, typer.Argument(help="Database folder.")]) -> None:
    """Print a database's manifest."""
    import json

    from terraloc.search.refdb import ReferenceDatabase

    db = ReferenceDatabase.load(path)
    typer.echo(json.dumps(db.manifest, indent=2))
