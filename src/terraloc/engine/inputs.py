"""Photo inputs for engine jobs: ids, paths and optional ``(lat, lon)`` in input order.

Jobs read them with :func:`terraloc.engine.stream.open_work_items` (what
:func:`terraloc.inputs.read_photo_inputs` reads — a folder, a glob, a list of paths or a
CSV/TSV/Parquet manifest — kept on disk); engine code sees the :class:`JobInputs` interface.
:class:`WorkItems` is the same in memory, for small inputs (tests, benchmarks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Unpack

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from terraloc.inputs import InputOptions


@dataclass
class WorkItems:
    """What a job processes, in input order.

    Attributes:
        ids: ``(N,)`` unique identifiers (the manifest's id cell, or the file stem).
        paths: ``(N,)`` photo paths (as workers will open them).
        coords: ``(N, 2)`` float64 ``(lat, lon)`` degrees, or ``None`` when the inputs have none.
        skipped: ``(item, reason)`` for inputs that named no usable photo (missing files, not images).
    """

    ids: list[str]
    paths: list[str]
    coords: NDArray[np.float64] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_coords(self) -> bool:
        """Whether every photo has a ``(lat, lon)`` row in :attr:`coords`."""
        return self.coords is not None

    def digest(self) -> str:
        """SHA-256 (16 hex) of the ids, paths and coordinates, in order (the job's inputs fingerprint)."""
        h = hashlib.sha256()
        for i, p in zip(self.ids, self.paths, strict=True):
            h.update(i.encode("utf-8", "surrogateescape"))  # file names need not be UTF-8
            h.update(b"\0")
            h.update(p.encode("utf-8", "surrogateescape"))
            h.update(b"\n")
        if self.coords is not None:
            h.update(np.ascontiguousarray(self.coords, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def part(self, lo: int, hi: int) -> tuple[list[str], list[str], NDArray[np.float64] | None]:
        """Ids, paths and ``(hi - lo, 2)`` coordinates (or ``None``) of inputs ``[lo, hi)``."""
        return self.ids[lo:hi], self.paths[lo:hi], None if self.coords is None else self.coords[lo:hi]


class JobInputs(Protocol):
    """What a job needs of its inputs: :class:`WorkItems` (in memory) or
    :class:`terraloc.engine.stream.StreamedItems` (kept on disk)."""

    skipped: list[tuple[str, str]]

    def __len__(self) -> int: ...

    @property
    def has_coords(self) -> bool: ...

    def digest(self) -> str: ...

    def part(self, lo: int, hi: int) -> tuple[list[str], list[str], NDArray[np.float64] | None]: ...


#: Reasons of input skips that are not failures: files in a scanned folder that are not photos.
IGNORED_REASONS = ("not an image", "hidden file", "hidden folder")


def is_ignored(reason: str) -> bool:
    """Whether an input skip is expected (a non-image file in a folder) rather than a failure."""
    return reason.startswith(IGNORED_REASONS)


def read_work_items(spec: str | Path | Sequence[str | Path], **options: Unpack[InputOptions]) -> WorkItems:
    """Read photo inputs (folder, glob, list of paths, CSV/Parquet manifest) into :class:`WorkItems`,
    in memory: :func:`terraloc.engine.stream.open_work_items` read back whole (small inputs only).

    Raises:
        InputError: nothing usable, a malformed manifest, duplicate ids.
    """
    from terraloc.engine.stream import open_work_items

    return open_work_items(spec, **options).to_work_items()
