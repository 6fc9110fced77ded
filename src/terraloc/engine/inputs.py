"""Photo inputs for engine jobs: ids, paths and optional ``(lat, lon)`` in input order.

Read by the one reader of photo inputs, :func:`terraloc.inputs.read_photo_inputs` (a folder, a
glob, a list of paths or a CSV/Parquet manifest; with ``require_coords`` photos found on disk get
their EXIF GPS position); engine code only sees :class:`WorkItems`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Unpack

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError

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
            h.update(i.encode())
            h.update(b"\0")
            h.update(p.encode())
            h.update(b"\n")
        if self.coords is not None:
            h.update(np.ascontiguousarray(self.coords, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def part(self, lo: int, hi: int) -> tuple[list[str], list[str], NDArray[np.float64] | None]:
        """Ids, paths and ``(hi - lo, 2)`` coordinates (or ``None``) of inputs ``[lo, hi)``."""
        return self.ids[lo:hi], self.paths[lo:hi], None if self.coords is None else self.coords[lo:hi]


class JobInputs(Protocol):
    """What a job needs of its inputs: :class:`WorkItems` (in memory) or
    :class:`terraloc.engine.stream.StreamedItems` (a manifest kept on disk)."""

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
    """Read photo inputs (folder, glob, list of paths, CSV/Parquet manifest) into :class:`WorkItems`.

    Raises:
        InputError: nothing usable, a malformed manifest, duplicate ids.
    """
    from terraloc.inputs import read_photo_inputs

    specs: str | list[str] = str(spec) if isinstance(spec, str | Path) else [str(s) for s in spec]
    if isinstance(specs, list) and len(specs) == 1:
        specs = specs[0]
    pi = read_photo_inputs(specs, **options)
    ids = [str(i) for i in pi.ids]
    if len(set(ids)) != len(ids) and options.get("id_col") is None:
        ids = [str(p) for p in pi.paths]  # same file names in several folders: the paths are the ids
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InputError(f"duplicate photo id '{dup}' (give distinct ids with --id-col)", field="id")
    coords = None if pi.coords is None else np.asarray(pi.coords, dtype=np.float64).reshape(-1, 2)
    return WorkItems(ids, [str(p) for p in pi.paths], coords, list(pi.skipped))
