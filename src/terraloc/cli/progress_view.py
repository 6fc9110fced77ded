"""Draws the library's progress reports (:mod:`terraloc.progress`) as Rich progress bars on stderr.

One bar per task description; a bar disappears when its task finishes. When a command already
shows its own live display (``predict``'s bar), a task is announced with one line instead, since
Rich allows one live display at a time.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console


class RichReporter:
    """A :data:`terraloc.progress.Reporter` drawing on ``console``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._announced: set[str] = set()

    def __call__(self, what: str, done: int, total: int | None) -> None:
        finished = done < 0 or (total is not None and done >= total)
        if what not in self._tasks:
            if finished or what in self._announced:
                return
            if not self._start(what, total):
                self._announced.add(what)
                self.console.print(f"{what} ...", markup=False, style="dim")
                return
        task = self._tasks[what]
        if finished:
            self._progress.remove_task(task)
            del self._tasks[what]
            if not self._tasks:
                self.close()
            return
        self._progress.update(task, completed=done, total=total)

    def _start(self, what: str, total: int | None) -> bool:
        from rich.errors import LiveError
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        if self._progress is None:
            progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            try:
                progress.start()
            except LiveError:  # the command shows its own live display
                return False
            self._progress = progress
        self._tasks[what] = self._progress.add_task(what, total=total)
        return True

    def close(self) -> None:
        """Stop the live display (tasks left unfinished by an error are dropped)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._tasks.clear()
