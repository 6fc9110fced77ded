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
    id_col: Annotated[str | None, typer.Option(help="Manifest id/path column (default: detected).")] = None,
    lat_col: Annotated[str | None, typer.Option(help="Manifest latitude column (default: detected).")] = None,
    lon_col: Annotated[str | None, typer.Option(help="Manifest longitude column (default: detected).")] = None,
    shard_size: Annotated[int, typer.Option(help="Photos per resumable shard.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Images per backbone call.")] = 16,
    workers: Annotated[int, typer.Option(help="Decoding threads (Ray: CPUs of the local cluster).")] = 2,
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
    images_old: Annotated[str | None, typer.Option("--images", hidden=True, help="Old name of --photos.")] = None,
) -> None:
    """Embed geotagged photos into a searchable reference database; photos left out are listed in OUT/skipped.csv."""
    from terraloc.cli.options import renamed
    from terraloc.encoders.image import load_backbone
    from terraloc.search.refdb import build_database
    from terraloc.search.spec import parse_index_spec

    spec = renamed(photos, images_old, new="--photos", old="--images", required=True)
    index_spec, index_options = parse_index_spec(index, field="--index")
    bb = load_backbone(backbone)
    summary = build_database(
        spec, bb, out, shard_size=shard_size, batch_size=batch_size, workers=workers, engine=engine,
        id_col=id_col, lat_col=lat_col, lon_col=lon_col, index=index_spec, index_options=index_options,
    )  # fmt: skip
    skipped = summary["skipped"]
    for path, reason in skipped[:20]:
        err_console.print(f"skipped: {path}: {reason}", markup=False)
    if len(skipped) > 20:
        err_console.print(f"... and {len(skipped) - 20} more", markup=False)
    if skipped:
        err_console.print(f"skipped list: {out / 'skipped.csv'}", markup=False)
    resumed = f", resumed {summary['resumed_shards']} shard(s)" if summary["resumed_shards"] else ""
    typer.echo(
        f"built {out}: {summary['n']} reference photos, {len(skipped)} skipped, backbone {bb.model_id} "
        f"({summary['seconds']:.1f} s{resumed})"
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
