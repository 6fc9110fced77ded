"""Drawing engine runs in the terminal: a progress bar (photos/s, ETA) and the final summary."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import typer

from terraloc.cli.app import err_console


@contextlib.contextmanager
def progress_bar(what: str, enabled: bool = True) -> Iterator[Callable[[Any], None]]:
    """A Rich bar on stderr fed by the engine's ``on_progress(Progress)`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        console=err_console,
        transient=True,
        disable=not enabled,
    )
    with bar:
        task = bar.add_task(what, total=None, rate="", eta="")

        def update(p: Any) -> None:
            eta = "" if p.eta_s is None else f"ETA {int(p.eta_s) // 60}:{int(p.eta_s) % 60:02d}"
            rate = f"{p.photos_per_s:.1f} photos/s" if p.photos_per_s else ""
            bar.update(task, total=p.total, completed=p.done, rate=rate, eta=eta)

        yield update


def print_summary(summary: Any, as_json: bool = False, extra: dict[str, Any] | None = None) -> None:
    """One line (or one JSON object on stdout): done, skipped, failed, time, photos/s."""
    d = {**summary.to_json(), **(extra or {})}
    if as_json:
        typer.echo(json.dumps(d))
        return
    err_console.print(
        f"{d['done']} done, {d['skipped']} skipped (finished earlier), {d['failed']} failed; "
        f"{d['seconds']:.1f} s, {d['photos_per_s']:.1f} photos/s ({d['engine']} engine, {d['workers']} worker(s)) "
        f"-> {d['out']}",
        markup=False,
    )


def report_errors(out: Any, limit: int = 10) -> None:
    """Print the first failures of a job folder's ``errors.csv`` (one line each)."""
    import csv
    from pathlib import Path

    path = Path(out) / "errors.csv"
    if not path.exists():
        return
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    from terraloc.engine.inputs import is_ignored

    rows = [r for r in rows if not is_ignored(r["reason"])]
    for r in rows[:limit]:
        err_console.print(f"failed: {r['path']}: {r['reason']}", markup=False)
    if len(rows) > limit:
        err_console.print(f"... and {len(rows) - limit} more (see {path})", markup=False)
