"""Photo inputs for engine jobs: ids, paths and optional ``(lat, lon)`` in input order.

The one reader of photo inputs is :func:`terraloc.inputs.read_photo_inputs` (a folder, a glob, a
list of paths or a CSV/Parquet manifest). Until it is available in this build, a thin local
reader with the same contract stands in (:func:`_fallback_read`); engine code only sees
:class:`WorkItems`.
"""

from __future__ import annotations

import glob as globlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError


@dataclass
class WorkItems:
    """What a job processes, in input order.

    Attributes:
        ids: ``(N,)`` unique identifiers (file stem or the manifest's id column).
        paths: ``(N,)`` photo paths (as workers will open them).
        coords: ``(N, 2)`` float64 ``(lat, lon)`` degrees, or ``None`` when the inputs have none.
        skipped: ``(item, reason)`` for inputs that named no usable photo (bad manifest rows).
    """

    ids: list[str]
    paths: list[str]
    coords: NDArray[np.float64] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def read_work_items(
    spec: str | Path | Sequence[str | Path],
    *,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
    require_coords: bool = False,
) -> WorkItems:
    """Read photo inputs (folder, glob, list of paths, CSV/Parquet manifest) into :class:`WorkItems`.

    Raises:
        InputError: nothing readable, duplicate ids, missing coordinate columns when required.
    """
    try:
        from terraloc.inputs import read_photo_inputs  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        read_photo_inputs = _fallback_read
    if isinstance(spec, str | Path):
        specs: Any = str(spec)
    else:
        specs = [str(s) for s in spec]
        if len(specs) == 1:
            specs = specs[0]
    pi = read_photo_inputs(specs, id_col=id_col, lat_col=lat_col, lon_col=lon_col, require_coords=require_coords)
    ids = [str(i) for i in pi.ids]
    if len(set(ids)) != len(ids) and id_col is None and len(set(pi.paths)) == len(pi.paths):
        ids = [str(p) for p in pi.paths]  # same file names in several folders: the paths are the ids
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InputError(f"duplicate photo id '{dup}' (give distinct ids with --id-col)", field="id")
    coords = None if pi.coords is None else np.asarray(pi.coords, dtype=np.float64).reshape(-1, 2)
    return WorkItems(ids, [str(p) for p in pi.paths], coords, list(pi.skipped))


# --------------------------------------------------------------------------- stand-in reader


@dataclass
class _Inputs:
    paths: list[str]
    ids: list[str]
    coords: NDArray[np.float64] | None
    skipped: list[tuple[str, str]]


_PATH_COLS = ("path", "image", "file", "filename", "img_id", "image_id")
_LAT_COLS = ("lat", "latitude")
_LON_COLS = ("lon", "lng", "long", "longitude")


def _pick(cols: list[str], given: str | None, options: Sequence[str], src: Path, what: str) -> str | None:
    low = {c.lower(): c for c in cols}
    if given is not None:
        if given.lower() not in low:
            raise InputError(f"no column '{given}'; found {', '.join(cols)}", path=src, field=what)
        return low[given.lower()]
    return next((low[o] for o in options if o in low), None)


def _read_manifest(
    src: Path, id_col: str | None, lat_col: str | None, lon_col: str | None, require_coords: bool
) -> _Inputs:
    import pandas as pd

    try:
        if src.suffix.lower() == ".parquet":
            df = pd.read_parquet(src).astype(str)
        else:
            df = pd.read_csv(src, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"cannot read manifest: {exc}", path=src) from None
    cols = [str(c) for c in df.columns]
    pcol = _pick(cols, None, _PATH_COLS, src, "path")
    if pcol is None:
        raise InputError(f"manifest needs a path column ({', '.join(_PATH_COLS)}); found {', '.join(cols)}", path=src)
    icol = _pick(cols, id_col, (), src, "id") if id_col else None
    latc = _pick(cols, lat_col, _LAT_COLS, src, "lat")
    lonc = _pick(cols, lon_col, _LON_COLS, src, "lon")
    if require_coords and (latc is None or lonc is None):
        raise InputError(f"manifest needs lat/lon columns; found {', '.join(cols)}", path=src, field="lat")
    paths, ids, ll, skipped = [], [], [], []
    for line, row in enumerate(df.to_dict("records"), start=2):
        rel = str(row[pcol]).strip()
        if not rel:
            skipped.append((f"{src}, line {line}", "empty path"))
            continue
        p = Path(rel) if Path(rel).is_absolute() else src.parent / rel
        if latc is not None and lonc is not None:
            try:
                lat, lon = float(row[latc]), float(row[lonc])
            except ValueError:
                skipped.append((str(p), f"{src}, line {line}: lat/lon not numbers"))
                continue
            if not (np.isfinite(lat) and np.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
                skipped.append((str(p), f"{src}, line {line}: lat/lon out of range"))
                continue
            ll.append((lat, lon))
        paths.append(str(p))
        ids.append(str(row[icol]).strip() if icol else Path(rel).stem)
    coords = np.asarray(ll, dtype=np.float64).reshape(-1, 2) if latc is not None and lonc is not None else None
    return _Inputs(paths, ids, coords, skipped)


def _fallback_read(
    spec: str | list[str],
    *,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
    require_coords: bool = False,
) -> _Inputs:
    """Stand-in for ``terraloc.inputs.read_photo_inputs`` (same contract)."""
    from terraloc.encoders.image.loading import find_images

    specs = [spec] if isinstance(spec, str) else list(spec)
    if len(specs) == 1:
        src = Path(specs[0])
        if src.is_file() and src.suffix.lower() in (".csv", ".parquet"):
            return _read_manifest(src, id_col, lat_col, lon_col, require_coords)
    if require_coords:
        raise InputError("photos need coordinates: give a CSV/Parquet manifest with lat/lon columns", field="photos")
    paths: list[str] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            paths.extend(str(f) for f in find_images(p))
        elif any(c in s for c in "*?["):
            hits = sorted(globlib.glob(s, recursive=True))
            if not hits:
                raise InputError("glob matches no file", path=s)
            paths.extend(hits)
        else:
            paths.append(str(p))
    return _Inputs(paths, [Path(p).stem for p in paths], None, [])
