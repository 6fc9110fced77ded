"""Rich progress bars for the callbacks library functions take (the library never draws them itself)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from terraloc.cli.app import err_console


def _bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
        disable=not enabled,
        transient=True,
    )


@contextlib.contextmanager
def count_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A bar driven by ``progress(done, total)`` callbacks (galleries, databases, location features)."""
    with _bar(enabled) as bar:
        task = bar.add_task(description, total=None, info="")

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextlib.contextmanager
def train_bar(enabled: bool = True) -> Iterator[Callable[[int, int, int, int, float | None], None]]:
    """A bar per epoch for :func:`terraloc.train.trainer.fit`'s ``progress`` callback."""
    with _bar(enabled) as bar:
        tasks: dict[int, TaskID] = {}

        def update(epoch: int, epochs: int, step: int, steps: int, loss: float | None) -> None:
            if epoch not in tasks:
                for t in tasks.values():
                    bar.remove_task(t)
                tasks.clear()
                tasks[epoch] = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, info="")
            info = "" if loss is None else f"loss {loss:.3f}"
            bar.update(tasks[epoch], completed=step, info=info)

        yield update
