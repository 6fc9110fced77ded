"""``terraloc embed-text``: add place-description text embeddings to image shards (G3 shards)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from terraloc.cli.app import app, err_console, out_console


@app.command("embed-text")
def embed_text_command(
    shards: Annotated[Path, typer.Option("--shards", help="Image shard folder (terraloc embed).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="G3 shard folder to write (for terraloc train g3).")],
    backbone: Annotated[
        str, typer.Option("--backbone", help="Full CLIP checkpoint whose text tower embeds the descriptions.")
    ],
    template: Annotated[
        str, typer.Option("--template", help="Description template ({city} {county} {state} {country}).")
    ] = "a photo taken in {city}, {state}, {country}.",
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Describe every row's coordinate offline and append the description's CLIP text embedding."""
    from terraloc.encoders.image import load_backbone
    from terraloc.errors import InputError
    from terraloc.train.g3 import g3_shards_from_image_shards

    if "{" not in template:
        raise InputError("has no {field} to fill", field="--template")
    if (out / "manifest.json").exists():
        raise InputError("already holds a finished shard folder; choose a new --out", path=out)
    bb = load_backbone(backbone, text=True)
    manifest = g3_shards_from_image_shards(shards, out, bb.text, template)  # type: ignore[attr-defined]
    if as_json:
        out_console().print_json(json.dumps(manifest))
    else:
        g3 = manifest["g3"]
        err_console.print(
            f"{manifest['rows']} row(s) into {out}: image {g3['image_dim']}-d + text {g3['text_dim']}-d",
            markup=False,
        )
