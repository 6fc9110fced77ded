"""Progress of long first-time work, reported by the library and drawn by a front end.

Library code never prints. Work that can take more than a few seconds the first time (building
the GeoCLIP gallery cache, building a search index, assembling a model file, embedding reference
photos) calls :func:`report` with what it is doing; a front end installs a reporter with
:func:`set_reporter` (``terraloc`` draws a Rich progress bar on stderr). Without a reporter the
calls cost nothing.

A task is identified by its description: ``report(what, 0, total)`` starts it, later calls
advance it, ``done >= total`` finishes it (``total=None``: a spinner, finished with
:func:`finish`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

#: ``reporter(what, done, total)``; ``total`` is ``None`` when unknown, ``done == -1`` finishes.
Reporter = Callable[[str, int, "int | None"], None]

_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install ``reporter`` (``None`` removes it); returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def report(what: str, done: int, total: int | None = None) -> None:
    """Tell the front end that ``done`` of ``total`` units of ``what`` are finished."""
    if _reporter is not None:
        _reporter(what, done, total)


def finish(what: str) -> None:
    """Mark ``what`` finished (for tasks reported with an unknown total)."""
    if _reporter is not None:
        _reporter(what, -1, None)


def callback(what: str) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback reporting under ``what`` (for APIs that take one)."""
    return lambda done, total: report(what, done, total)


@contextlib.contextmanager
def task(what: str) -> Iterator[None]:
    """Report ``what`` as a spinner for the duration of the block."""
    report(what, 0, None)
    try:
        yield
    finally:
        finish(what)
