"""``terraloc db build|info``: reference-photo databases (embeddings + search index + Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from terraloc.cli.app import app, err_console

db_app = typer.Typer(help="Reference-photo databases for the kNN (refdb) head.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("build")
def db_build(
    images: Annotated[Path, typer.Option("--images", help="CSV (path,lat,lon) or a folder of EXIF-geotagged photos.")],
    out: Annotated[Path, typer.Option("--out", help="Database folder to create (resumes an unfinished build).")],
    backbone: Annotated[str, typer.Option(help="Backbone spec (folder, model name, efficientnet-lite0).")] = (
        "efficientnet-lite0"
    ),
    shard_size: Annotated[int, typer.Option(help="Photos per resumable shard.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Images per backbone call.")] = 16,
    workers: Annotated[int, typer.Option(help="Decoding threads.")] = 2,
    engine: Annotated[
        str,
        typer.Option(
            help="Embedding engine: local, or ray (Ray Data; starts a local cluster limited to --workers CPUs "
            "unless RAY_ADDRESS is set)."
        ),
    ] = "local",
    index: Annotated[
        str,
        typer.Option(
            "--index",
            help="Search index the database is searched with: flat (exact), hierarchical@OPTIONS or a FAISS "
            "factory string with @PARAMS, e.g. 'IVF1024,Flat@nprobe=16' for a large database.",
        ),
    ] = "flat",
) -> None:
    """Embed geotagged photos into a searchable reference database; photos without GPS are listed."""
    from terraloc.cli.progress import count_bar
    from terraloc.encoders.image import load_backbone
    from terraloc.search.refdb import build_database
    from terraloc.search.spec import parse_index_spec

    spec, options = parse_index_spec(index, field="--index")
    bb = load_backbone(backbone)
    with count_bar("embedding") as bar:
        summary = build_database(
            images, bb, out, shard_size=shard_size, batch_size=batch_size, workers=workers, engine=engine,
            progress=bar, index=spec, index_options=options,
        )  # fmt: skip
    skipped = summary["skipped"]
    for path, reason in skipped[:20]:
        err_console.print(f"skipped: {path}: {reason}", markup=False)
    if len(skipped) > 20:
        err_console.print(f"... and {len(skipped) - 20} more (see {out / 'skipped.csv'})", markup=False)
    resumed = f", resumed {summary['resumed_shards']} shard(s)" if summary["resumed_shards"] else ""
    typer.echo(
        f"built {out}: {summary['n']} reference photos, {len(skipped)} skipped, backbone {bb.model_id} "
        f"({summary['seconds']:.1f} s{resumed})"
    )


@db_app.command("info")
def db_info(path: Annotated[Path, typer.Argument(help="Database folder.")]) -> None:
    """Print a database's manifest."""
    import json

    from terraloc.search.refdb import ReferenceDatabase

    db = ReferenceDatabase.load(path)
    typer.echo(json.dumps(db.manifest, indent=2))
