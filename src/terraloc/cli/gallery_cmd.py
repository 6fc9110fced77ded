"""``terraloc gallery build|info``: GPS galleries of cached location embeddings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from terraloc.cli.app import app, out_console

gallery_app = typer.Typer(help="GPS galleries: coordinates with cached location embeddings.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")


@gallery_app.command("build")
def gallery_build(
    coords: Annotated[
        Path | None,
        typer.Option("--coords", help="CSV with lat/lon columns (or (N,2) .npy); default: GeoCLIP's 100K gallery."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Gallery folder to create.")] = None,
    encoder: Annotated[str, typer.Option(help="Location encoder name.")] = "geoclip",
    dtype: Annotated[str, typer.Option(help="Embeddings on disk: float32 or float16.")] = "float32",
    batch_size: Annotated[int, typer.Option(help="Rows per encoder forward pass.")] = 8192,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing gallery.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Embed coordinates with the location encoder into a gallery folder (atomic; rerun to resume)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from terraloc.cli.app import err_console
    from terraloc.encoders import load_location_encoder
    from terraloc.encoders.geoclip_assets import geoclip_asset
    from terraloc.errors import InputError
    from terraloc.search.gallery import build_gallery, galleries_dir, read_coords_file

    if batch_size < 1:
        raise InputError("must be at least 1", field="--batch-size")
    src = coords if coords is not None else geoclip_asset("gps_gallery")
    points = read_coords_file(src)
    enc = load_location_encoder(encoder)
    if out is None:
        out = galleries_dir() / f"{Path(src).stem}-{enc.encoder_id}-{enc.weights_hash}-{dtype}"
    with Progress(
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=as_json,
    ) as bar:
        task = bar.add_task("embed", total=len(points))
        gallery = build_gallery(
            points,
            enc,
            out,
            dtype=dtype,
            batch_size=batch_size,
            overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done),
            extra={"source": str(src)},
        )
    if as_json:
        typer.echo(json.dumps({"path": str(gallery.path), **gallery.manifest}))
        return
    m = gallery.manifest
    out_console().print(
        f"gallery {gallery.path}: {m['count']} points, {m['dim']}-d {m['dtype']}, encoder {m['encoder_id']} "
        f"(weights {m['weights_hash']})"
    )


@gallery_app.command("info")
def gallery_info(
    path: Annotated[Path, typer.Argument(help="Gallery folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Check a gallery folder and print its manifest."""
    from terraloc.search.gallery import Gallery

    gallery = Gallery.load(path)
    if as_json:
        typer.echo(json.dumps({"path": str(gallery.path), **gallery.manifest}))
        return
    for key, value in gallery.manifest.items():
        out_console().print(f"{key}: {value}")
