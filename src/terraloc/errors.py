"""User-facing error types.

A :class:`TerralocError` is a problem with the user's input or environment (a missing file,
a malformed row, a model that is not on disk). Front ends print its message on one line and
exit non-zero without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class TerralocError(Exception):
    """An error caused by user input or the environment, reported in one line."""

    exit_code: int = 2


class InputError(TerralocError, ValueError):
    """Malformed user input: a file, a row, a field or an argument.

    Args:
        message: what is wrong.
        path: the file concerned, if any.
        row: 1-based line number in that file (header is line 1), if any.
        field: the column or argument name, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.row = row
        self.field = field
        self.problem = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"line {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class MissingResourceError(TerralocError, FileNotFoundError):
    """A required file, model or data set is not on disk.

    The message names what is missing and, where one exists, the command that fetches it.
    """
