"""Reader of G3-style candidate files (precomputed retrieval output).

The file G3 writes (and ``shared/data/rag/g3_candidates_im2gps3k_dev.csv`` holds) is a CSV with
an image id column (``IMG_ID``), optional ground truth (``LAT``, ``LON``), and the coordinates of
the nearest references ``candidate_0_gps`` … ``candidate_{K-1}_gps`` and of the farthest ones
``reverse_0_gps`` … as JSON ``"[lat, lon]"`` strings.

A malformed row (unparseable cell, out-of-range coordinate, missing id) is reported by line and
skipped; the rest of the file is processed. A file without the id column or without any
``candidate_i_gps`` column is an :class:`~terraloc.errors.InputError`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from terraloc.errors import InputError, MissingResourceError
from terraloc.rag.candidates import SOURCE_FARTHEST, SOURCE_NEAREST, Candidate, CandidateSet

_NEAR_RE = re.compile(r"^candidate_(\d+)_gps$")
_FAR_RE = re.compile(r"^reverse_(\d+)_gps$")
ID_COLUMNS = ("IMG_ID", "image", "img_id", "name")


@dataclass
class CandidatesFile:
    """The readable rows of a candidates file.

    Attributes:
        path: the file read.
        sets: one :class:`CandidateSet` per good row, in file order.
        problems: one-line messages (file, line, field) of the rows that were skipped.
    """

    path: Path
    sets: list[CandidateSet]
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sets)


def parse_gps_cell(text: str, *, path: Path, line: int, column: str) -> tuple[float, float]:
    """Parse one ``"[lat, lon]"`` JSON cell into degrees, raising a located :class:`InputError`."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        raise InputError(f"not a JSON [lat, lon] pair: {text[:40]!r}", path=path, row=line, field=column) from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise InputError(f"expected [lat, lon], got {text[:40]!r}", path=path, row=line, field=column)
    lat, lon = float(value[0]), float(value[1])
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        raise InputError(f"coordinate ({lat}, {lon}) is out of range", path=path, row=line, field=column)
    return lat, lon


def _numbered(header: list[str], pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    found = [(int(m.group(1)), h) for h in header if (m := pattern.match(h))]
    return sorted(found)


def read_candidates_file(path: str | Path, *, limit: int | None = None) -> CandidatesFile:
    """Read a G3 candidates CSV.

    Args:
        path: the CSV file.
        limit: stop after this many good rows (``None`` = all).

    Returns:
        The good rows as candidate sets (nearest with ``source="refdb-nearest"``, farthest
        with ``source="refdb-farthest"``, rank = column index) and the skipped rows' messages.

    Raises:
        MissingResourceError: the file does not exist.
        InputError: the file is empty, or lacks an id column or any ``candidate_i_gps`` column.
    """
    path = Path(path)
    if not path.exists():
        raise MissingResourceError(f"{path}: file not found")
    if path.is_dir():
        raise InputError("is a folder, expected a CSV file", path=path)
    sets: list[CandidateSet] = []
    problems: list[str] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise InputError("file is empty", path=path) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read CSV header: {exc}", path=path, row=1) from None
        id_col = next((c for c in ID_COLUMNS if c in header), None)
        if id_col is None:
            raise InputError(f"no image id column (expected one of {', '.join(ID_COLUMNS)})", path=path, row=1)
        near_cols = _numbered(header, _NEAR_RE)
        far_cols = _numbered(header, _FAR_RE)
        if not near_cols:
            raise InputError("no candidate_<i>_gps columns", path=path, row=1)
        lat_col = next((c for c in ("LAT", "lat") if c in header), None)
        lon_col = next((c for c in ("LON", "lon") if c in header), None)
        pos = {h: i for i, h in enumerate(header)}
        line = 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                line = reader.line_num
                problems.append(str(InputError(f"unreadable CSV row: {exc}", path=path, row=line)))
                continue
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            try:
                sets.append(_row(cells, pos, id_col, lat_col, lon_col, near_cols, far_cols, path, line))
            except InputError as exc:
                problems.append(str(exc))
                continue
            if limit is not None and len(sets) >= limit:
                break
    if not sets and not problems:
        raise InputError("no data rows", path=path)
    return CandidatesFile(path=path, sets=sets, problems=problems)


def _row(
    cells: list[str],
    pos: dict[str, int],
    id_col: str,
    lat_col: str | None,
    lon_col: str | None,
    near_cols: list[tuple[int, str]],
    far_cols: list[tuple[int, str]],
    path: Path,
    line: int,
) -> CandidateSet:
    if len(cells) != len(pos):
        raise InputError(f"expected {len(pos)} cells, found {len(cells)}", path=path, row=line)

    def cell(name: str) -> str:
        return cells[pos[name]].strip()

    image = cell(id_col)
    if not image:
        raise InputError("empty image id", path=path, row=line, field=id_col)
    truth = None
    if lat_col and lon_col and (cell(lat_col) or cell(lon_col)):
        try:
            lat, lon = float(cell(lat_col)), float(cell(lon_col))
        except ValueError:
            raise InputError("ground truth is not a number", path=path, row=line, field=lat_col) from None
        if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
            raise InputError(f"ground truth ({lat}, {lon}) is out of range", path=path, row=line, field=lat_col)
        truth = (lat, lon)
    nearest = []
    for rank, (_, col) in enumerate(near_cols):
        if cell(col) == "":
            continue  # fewer candidates than columns: allowed
        lat, lon = parse_gps_cell(cell(col), path=path, line=line, column=col)
        nearest.append(Candidate(lat, lon, math.nan, SOURCE_NEAREST, rank))
    if not nearest:
        raise InputError("no candidate coordinates", path=path, row=line, field=near_cols[0][1])
    farthest = []
    for rank, (_, col) in enumerate(far_cols):
        if cell(col) == "":
            continue
        lat, lon = parse_gps_cell(cell(col), path=path, line=line, column=col)
        farthest.append(Candidate(lat, lon, math.nan, SOURCE_FARTHEST, rank))
    return CandidateSet(image=image, nearest=nearest, farthest=farthest, truth=truth, line=line)
