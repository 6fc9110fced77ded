"""``terraloc db build|info``: reference-photo databases (FAISS + Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from terraloc.cli.app import app, err_console

db_app = typer.Typer(help="Reference-photo databases for the kNN (refdb) head.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("build")
def db_build(
    images: Annotated[
        Path | None,
        typer.Option(
            "--images", "--photos", help="CSV/Parquet manifest (path,lat,lon) or a folder of EXIF-geotagged photos."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Database folder to create (resumes an unfinished build).")
    ] = None,
    backbone: Annotated[str, typer.Option(help="Backbone spec (folder, model name, efficientnet-lite0).")] = (
        "efficientnet-lite0"
    ),
    index: Annotated[
        str,
        typer.Option(
            "--index",
            help="FAISS factory string, optionally with search parameters: Flat, HNSW32, 'IVF1024,PQ32@nprobe=16'.",
        ),
    ] = "Flat",
    train_size: Annotated[int, typer.Option(help="Rows sampled to train IVF/PQ indexes.")] = 100_000,
    part_size: Annotated[
        int | None, typer.Option("--part-size", "--shard-size", help="Photos per resumable part (default: by count).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per backbone call.")] = 16,
    engine: Annotated[
        str, typer.Option(help="local (this process) or ray (actor pool; see docs/engine.md).")
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else start one).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Ray actors, or compute + decoding threads for --engine local.")] = 2,
    threads: Annotated[int, typer.Option(help="Compute threads per Ray actor.")] = 1,
    gpus: Annotated[float | None, typer.Option("--gpus", help="GPUs per Ray actor (default: automatic).")] = None,
    id_col: Annotated[str | None, typer.Option("--id-col", help="Manifest id column (default: file stem).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Draw a progress bar.")] = True,
) -> None:
    """Embed geotagged photos into a FAISS index + Parquet table; photos without GPS are listed."""
    from terraloc.cli.engine_view import print_summary, progress_bar
    from terraloc.engine import make_engine
    from terraloc.engine.refdb_build import build_refdb, geotagged_items
    from terraloc.errors import InputError

    if images is None:
        raise InputError("missing option --images (a manifest or a folder of geotagged photos)", field="images")
    if out is None:
        raise InputError("missing option --out", field="out")
    eng = make_engine(engine, workers=workers, threads=threads, ray_address=ray_address, gpus=gpus)
    items = geotagged_items(images, id_col=id_col)
    with progress_bar("embedding", enabled=progress and not as_json) as bar:
        res = build_refdb(
            items,
            backbone,
            out,
            eng,
            index=index,
            train_size=train_size,
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
            err_console.print(f"... and {len(skipped) - 20} more (see {out / 'skipped.csv'})", markup=False)
    print_summary(res["summary"], as_json, {"n": res["n"], "index": res["index"], "out": str(out)})
    if not as_json:
        typer.echo(
            f"built {out}: {res['n']} reference photos, {len(skipped)} skipped, backbone {backbone}, "
            f"index {res['index']} ({res['seconds']:.1f} s)"
        )


@db_app.command("info")
def db_info(path: Annotated[Path, typer.Argument(help="Database folder.")]) -> None:
    """Print a database's manifest."""
    import json

    from terraloc.search.refdb import ReferenceDatabase

    db = ReferenceDatabase.load(path)
    typer.echo(json.dumps(db.manifest, indent=2))
