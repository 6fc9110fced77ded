"""Shared option helpers: renamed options kept for one release, and required-option checks.

An option that was renamed keeps its old spelling as a hidden option for one release; the command
passes both values through :func:`renamed`, which prints one deprecation line on stderr when the
old spelling was used. The vocabulary itself (``--out``, ``--photos``, ``--json``...) is written
down in ``docs/cli.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar, overload

import typer

T = TypeVar("T")

# Ground-truth options shared by `eval` and `calibrate` (one spelling, one default: detected columns).
BenchmarkOption = Annotated[str | None, typer.Option("--benchmark", "-b", help="im2gps3k, im2gps, yfcc4k or yfcc26k.")]
GroundTruthOption = Annotated[
    Path | None, typer.Option("--ground-truth", help="Custom ground-truth CSV/Parquet (with --id-col etc.).")
]
IdColOption = Annotated[str | None, typer.Option(help="Id column of --ground-truth (default: detected).")]
LatColOption = Annotated[str | None, typer.Option(help="Latitude column of --ground-truth (default: detected).")]
LonColOption = Annotated[str | None, typer.Option(help="Longitude column of --ground-truth (default: detected).")]

#: The release that drops the old spellings.
REMOVED_IN = "0.2"


def deprecated(old: str, new: str, note: str = "") -> None:
    """Print ``warning: OLD is deprecated ...; use NEW`` on stderr (once per call)."""
    from terraloc.cli.app import err_console

    extra = f" ({note})" if note else ""
    err_console.print(
        f"warning: {old} is deprecated and will be removed in terraloc {REMOVED_IN}; use {new}{extra}",
        markup=False,
        style="yellow",
    )


def usage_error(message: str) -> typer.BadParameter:
    """A Click usage error (exit 2, one line plus the usage line) for the running command."""
    from typer._click.globals import get_current_context

    exc = typer.BadParameter(message, ctx=get_current_context(silent=True))
    exc.format_message = lambda: message  # type: ignore[method-assign]
    return exc


@overload
def renamed(new_value: T | None, old_value: T | None, *, new: str, old: str, required: Literal[True]) -> T: ...


@overload
def renamed(
    new_value: T | None, old_value: T | None, *, new: str, old: str, required: Literal[False] = False
) -> T | None: ...


def renamed(new_value: T | None, old_value: T | None, *, new: str, old: str, required: bool = False) -> T | None:
    """The value of an option renamed from ``old`` to ``new``.

    Args:
        new_value, old_value: what the command received under each spelling (``None`` = not given).
        new, old: the option names, e.g. ``"--photos"`` and ``"--images"``.
        required: raise a usage error when neither was given.

    Raises:
        typer.BadParameter: both spellings given with different values, or a required option missing.
    """
    if old_value is not None:
        deprecated(old, new)
        if new_value is not None and new_value != old_value:
            raise usage_error(f"give {new} or its old name {old}, not both")
        return old_value
    if new_value is None and required:
        raise usage_error(f"missing option '{new}'")
    return new_value
