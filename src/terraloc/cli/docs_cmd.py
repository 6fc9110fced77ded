"""``terraloc docs [NAME]``: the documentation that ships with terraloc, readable offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from terraloc.cli.app import app
from terraloc.errors import InputError, MissingResourceError


def docs_dir() -> Path:
    """``terraloc/docs`` in an installed wheel; the repository's ``docs/`` in a checkout."""
    pkg = Path(__file__).resolve().parents[1]
    for cand in (pkg / "docs", pkg.parents[1] / "docs"):
        if cand.is_dir():
            return cand
    raise MissingResourceError(f"documentation folder not found (looked in {pkg / 'docs'})")


@app.command("docs")
def docs(
    name: Annotated[
        str | None, typer.Argument(help="Document name (e.g. predict, serve, ARCHITECTURE); omit to list them.")
    ] = None,
) -> None:
    """List the documentation, or print one document (Markdown) to stdout."""
    folder = docs_dir()
    found = {p.stem.lower(): p for p in sorted(folder.glob("*.md"))}
    readme = folder / "README.md"
    if not readme.is_file():
        readme = folder.parent / "README.md"
    if readme.is_file():
        found.setdefault("readme", readme)
    if name is None:
        for key, where in sorted(found.items()):
            typer.echo(f"{key:14s} {where}")
        return
    doc = found.get(name.lower().removesuffix(".md").removeprefix("docs/"))
    if doc is None:
        raise InputError(f"unknown document '{name}'; known: {', '.join(sorted(found))}", field="name")
    typer.echo(doc.read_text(encoding="utf-8"), nl=False)
