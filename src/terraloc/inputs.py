"""One reader of photo inputs: a folder, a glob, a list of paths, or a CSV/Parquet manifest.

:func:`read_photo_inputs` is what every command that takes photos uses (``db build``, ``embed``,
``fusion``, ``eval --ground-truth``, ``predict``), so they all accept the same things:

* **a folder** — image files found recursively (sorted), symlinked folders followed once;
* **a glob** — ``"photos/**/*.jpg"`` (``**`` crosses folders), matched files and folders;
* **an image file**, or **a list** of any of these (duplicates kept once, first wins);
* **a manifest** — ``.csv`` / ``.tsv`` / ``.parquet`` with a path or id column and optional
  latitude/longitude columns. Column names are matched case-insensitively and detected when not
  given: path/id from ``path, file, filename, image, img, photo, img_id, image_id, id, name``
  (so ``IMG_ID,LAT,LON``, the shared ``metadata.csv`` and ``osv5m_photos.csv`` all read as is),
  latitude from ``lat, latitude``, longitude from ``lon, lng, long, longitude``. Relative paths
  are resolved against the manifest's folder.

What is not used is listed in :attr:`PhotoInputs.skipped` with a reason: files that are not
images, formats this build cannot decode (AVIF, HEIC, RAW...), hidden files, symlink loops and
broken links, unreadable files and folders, manifest rows whose file is missing, and (with
``require_coords``) photos without coordinates. Malformed manifests (missing columns,
non-numeric or out-of-range coordinates, empty or duplicate ids) raise :class:`InputError`
naming the file, line and column: a manifest is fixed once, not skipped row by row.
"""

from __future__ import annotations

import glob as globmod
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError

#: Manifest file suffixes (lower case).
MANIFEST_SUFFIXES = frozenset({".csv", ".tsv", ".parquet", ".pq"})

#: Candidate column names, most specific first (matched case-insensitively).
PATH_COLUMNS = (
    "path", "filepath", "file_path", "image_path", "img_path", "file", "filename", "file_name",
    "image", "img", "photo", "img_id", "image_id", "imgid", "id", "name",
)  # fmt: skip
LAT_COLUMNS = ("lat", "latitude", "gt_lat")
LON_COLUMNS = ("lon", "lng", "long", "longitude", "gt_lon", "gt_long")

#: Image formats that exist but this build does not decode (suffix -> format name).
UNSUPPORTED_FORMATS = {
    ".avif": "AVIF",
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".jxl": "JPEG XL",
    ".svg": "SVG",
    ".psd": "Photoshop",
    ".cr2": "Canon RAW",
    ".cr3": "Canon RAW",
    ".nef": "Nikon RAW",
    ".arw": "Sony RAW",
    ".dng": "DNG RAW",
    ".orf": "Olympus RAW",
    ".rw2": "Panasonic RAW",
    ".raw": "RAW",
}


#: Suffixes (lower case, with dot) the image decoder reads (``encoders.image.loading``); kept here so
#: that listing photos does not import the model code (~190 MiB in a Ray driver).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".jfif"})


def image_extensions() -> frozenset[str]:
    """Suffixes (lower case, with dot) read as images: :data:`IMAGE_EXTENSIONS`, plus AVIF where Pillow has it."""
    exts = set(IMAGE_EXTENSIONS)
    try:
        from PIL import features

        if features.check("avif"):
            exts.add(".avif")
    except Exception:  # pragma: no cover - older Pillow without the feature name
        pass
    return frozenset(exts)


@dataclass
class PhotoInputs:
    """Photos named by one input spec.

    Attributes:
        paths: image file paths (strings), in input order; for a manifest read with
            ``check_files=False`` they may not exist.
        ids: one identifier per photo: the manifest's id (or path) cell as written, or the file
            name's stem for photos found on disk. Match them with
            :func:`terraloc.evaluate.ids.image_key`.
        coords: ``(N, 2)`` float64 ``(lat, lon)`` degrees, or ``None`` when the input carries no
            coordinates. With ``require_coords=False`` a blank manifest cell is ``NaN``.
        skipped: ``(item, reason)`` for every file or row not used.
        lines: the manifest line of each photo (header = line 1), or ``None``.
        source: the input as given (for messages).
        hint: a suggestion for the user when photos were skipped for want of coordinates and a
            manifest lies beside them (e.g. ``use --photos DIR/metadata.csv``), else ``None``.
        columns: the manifest columns used (``{"path": ..., "id": ..., "lat": ..., "lon": ...}``).
    """

    paths: list[str]
    ids: list[str]
    coords: NDArray[np.float64] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    lines: list[int] | None = None
    source: str = ""
    hint: str | None = None
    columns: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def skip_summary(self) -> str:
        """``"3 not an image, 1 unsupported image format (AVIF)"``: skipped reasons counted."""
        counts = Counter(_reason_kind(r) for _, r in self.skipped)
        return ", ".join(f"{n} {k}" for k, n in counts.most_common())


class NoPhotosError(InputError):
    """An input named no usable photo; ``skipped`` and ``hint`` say why (for a skipped-list file)."""

    def __init__(self, message: str, *, path: str | None, skipped: list[tuple[str, str]], hint: str | None) -> None:
        super().__init__(message, path=path)
        self.skipped = skipped
        self.hint = hint


class InputOptions(TypedDict, total=False):
    """Keyword options of :func:`read_photo_inputs` and :func:`read_manifest` (all optional).

    ``id_col``, ``lat_col``, ``lon_col``: manifest columns (case-insensitive); detected when absent
    or ``None``. ``require_coords`` (default ``False``): every photo needs ``(lat, lon)``.
    ``check_files`` (default ``True``): manifests only — skip rows whose file does not exist.
    """

    id_col: str | None
    lat_col: str | None
    lon_col: str | None
    require_coords: bool
    check_files: bool


def _reason_kind(reason: str) -> str:
    # "photos.csv line 4: file not found" -> "file not found"; "not an image (.txt)" -> "not an image"
    kind = reason.rsplit(": ", 1)[-1]
    return kind.split(" (", 1)[0]


# --------------------------------------------------------------------------- entry point


def read_photo_inputs(spec: str | Path | Sequence[str | Path], **options: Unpack[InputOptions]) -> PhotoInputs:
    """Read a folder, glob, image file, manifest, or a list of them.

    Args:
        spec: what the user gave (one item or a list).
        id_col, lat_col, lon_col: manifest columns (case-insensitive); detected when ``None``.
        require_coords: every photo needs ``(lat, lon)``: manifests must have coordinate columns
            with a value in every row; photos found on disk get their EXIF GPS position and are
            skipped (reason ``no EXIF GPS position``) without one.
        check_files: manifests only — skip rows whose file does not exist (``False`` for ground
            truth, where the ids matter and the photos need not be here).

    Returns:
        :class:`PhotoInputs`; ``coords`` is set when every part carries coordinates.

    Raises:
        InputError: a path that does not exist, a glob that matches nothing, a malformed manifest.
        NoPhotosError: nothing usable at all (carries the skipped list and a hint).
    """
    items = [spec] if isinstance(spec, str | Path) else list(spec)
    if not items:
        raise InputError("no photo inputs given")
    if len(items) == 1:
        result = _read_one(items[0], options, strict=True)
    else:
        parts = []
        for item in items:
            try:
                parts.append(_read_one(item, options, strict=False))
            except NoPhotosError as exc:
                parts.append(PhotoInputs([], [], None, exc.skipped or [(str(item), _strip(exc, item))]))
        result = _concat(parts, ", ".join(str(i) for i in items))
    if not result.paths:
        raise no_photos(result)
    return result


def no_photos(result: PhotoInputs) -> NoPhotosError:
    """The error for inputs that named no usable photo (``result.paths`` empty): counts the skipped
    reasons and adds the hint."""
    why = f" ({result.skip_summary()})" if result.skipped else ""
    hint = f"; {result.hint}" if result.hint else ""
    return NoPhotosError(f"no usable photos{why}{hint}", path=result.source, skipped=result.skipped, hint=result.hint)


def _strip(exc: InputError, item: str | Path) -> str:
    return exc.problem if exc.path == str(item) else str(exc)


def _concat(parts: list[PhotoInputs], source: str) -> PhotoInputs:
    seen: set[str] = set()
    paths: list[str] = []
    ids: list[str] = []
    coords: list[NDArray[np.float64]] = []
    has_coords = all(p.coords is not None for p in parts if p.paths)
    skipped: list[tuple[str, str]] = []
    for p in parts:
        skipped.extend(p.skipped)
        for i, (path, ident) in enumerate(zip(p.paths, p.ids, strict=True)):
            key = os.path.normpath(os.path.abspath(path))
            if key in seen:
                continue
            seen.add(key)
            paths.append(path)
            ids.append(ident)
            if has_coords and p.coords is not None:
                coords.append(p.coords[i])
    hint = next((p.hint for p in parts if p.hint), None)
    arr = np.asarray(coords, dtype=np.float64).reshape(-1, 2) if has_coords else None
    return PhotoInputs(paths, ids, arr, skipped, None, source, hint)


def looks_like_glob(text: str) -> bool:
    """Whether ``text`` holds a glob wildcard (``*``, ``?`` or ``[``)."""
    return any(ch in text for ch in "*?[")


def input_kind(item: str | Path, *, strict: bool) -> str:
    """What one input item is: ``"glob"``, ``"folder"``, ``"manifest"``, ``"file"`` (an image file,
    used whatever its suffix: the decoder reports what it cannot read) or ``"missing"`` (only when
    not ``strict``: one item of a list, skipped as ``file not found``).

    Raises:
        InputError: a manifest or (``strict``) a path that does not exist, a broken link.
    """
    p = Path(item)
    if not p.exists() and not p.is_symlink() and isinstance(item, str) and looks_like_glob(str(item)):
        return "glob"
    if p.is_dir():
        return "folder"
    if p.suffix.lower() in MANIFEST_SUFFIXES:
        if not p.exists():
            raise InputError("file not found", path=p)
        return "manifest"
    if not p.exists():
        if p.is_symlink():
            raise InputError("broken symbolic link", path=p)
        if strict:
            raise InputError("no such file or folder", path=p)
        return "missing"
    return "file"


def _read_one(item: str | Path, options: InputOptions, *, strict: bool) -> PhotoInputs:
    text = str(item)
    require_coords = options.get("require_coords", False)
    p = Path(item)
    kind = input_kind(item, strict=strict)
    if kind == "glob":
        return _read_glob(text, require_coords)
    if kind == "folder":
        return _read_files(text, _scan_folder(p), require_coords, folder=p)
    if kind == "manifest":
        return read_manifest(p, **options)
    if kind == "missing":
        return PhotoInputs([], [], None, [(text, "file not found")], source=text)
    return _read_files(text, ([p], []), require_coords, folder=p.parent)


# --------------------------------------------------------------------------- folders and globs


def _classify(path: Path, exts: frozenset[str]) -> str | None:
    """``None`` for an image file to use, else the reason it is skipped."""
    suffix = path.suffix.lower()
    if path.name.startswith("."):
        return "hidden file"
    if suffix in exts:
        if not os.access(path, os.R_OK):
            return "permission denied"
        return None
    if suffix in UNSUPPORTED_FORMATS:
        return f"unsupported image format ({UNSUPPORTED_FORMATS[suffix]}; convert it to JPEG or PNG)"
    if suffix in MANIFEST_SUFFIXES:
        return f"not an image ({suffix}; to use it as a manifest, pass the file itself)"
    return f"not an image ({suffix or 'no extension'})"


#: One entry of a folder walk or glob listing: ``(image path, None)`` or ``(item, reason skipped)``.
Listed = tuple[Path, None] | tuple[str, str]


def _split(listing: Iterable[Listed]) -> tuple[list[Path], list[tuple[str, str]]]:
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for item, reason in listing:
        if reason is None:
            found.append(item)  # type: ignore[arg-type]
        else:
            skipped.append((str(item), reason))
    return found, skipped


def _scan_folder(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files under ``root`` (recursive, sorted) and ``(path, reason)`` for everything else."""
    return _split(walk_folder(root))


def walk_folder(root: Path) -> Iterator[Listed]:
    """Image files under ``root`` and everything else with its reason, depth first, each folder's
    entries sorted by name (a sub-folder walked where its name sorts); one folder's entries in
    memory at a time.

    Symlinked folders are followed; a link back to a folder already visited is reported as a
    symlink loop instead of being walked again.
    """
    exts = image_extensions()
    visited: set[tuple[int, int]] = set()

    def walk(folder: Path) -> Iterator[Listed]:
        try:
            st = folder.stat()
        except OSError as exc:
            yield str(folder), _os_reason(exc)
            return
        key = (st.st_dev, st.st_ino)
        if key in visited:
            yield str(folder), "symlink loop (folder already visited)"
            return
        visited.add(key)
        try:  # (name, is_dir, is_file, error): a fifth of a DirEntry's memory in a large folder
            with os.scandir(folder) as it:
                entries = sorted((_entry(e) for e in it), key=lambda e: e[0])
        except OSError as exc:
            yield str(folder), _os_reason(exc)
            return
        top = os.fspath(folder)
        for name, is_dir, is_file, error in entries:
            at = os.path.join(top, name)  # = DirEntry.path
            path = Path(at)
            if error is not None:
                yield at, error
            elif is_dir:
                if name.startswith("."):
                    yield at, "hidden folder"
                else:
                    yield from walk(path)
            elif is_file:
                reason = _classify(path, exts)
                yield (path, None) if reason is None else (at, reason)
            elif os.path.islink(at):
                yield at, _link_reason(path)
            else:
                yield at, "not a regular file"

    yield from walk(root)


def _entry(e: os.DirEntry[str]) -> tuple[str, bool, bool, str | None]:
    """A folder entry's name, whether it is a folder / a file (links followed), or why that is unknown."""
    try:
        return e.name, e.is_dir(follow_symlinks=True), e.is_file(follow_symlinks=True), None
    except OSError as exc:
        return e.name, False, False, _os_reason(exc)


def _os_reason(exc: OSError) -> str:
    import errno

    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"unreadable ({exc.strerror or exc})"


def _link_reason(path: Path) -> str:
    try:
        path.stat()
    except OSError as exc:
        import errno

        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return "broken symbolic link"
    return "not a regular file"


def _read_glob(pattern: str, require_coords: bool) -> PhotoInputs:
    matches = sorted(globmod.glob(pattern, recursive=True))
    if not matches:
        raise InputError("pattern matches no files", path=pattern)
    files, skipped = _split(glob_listing(matches))
    files = list(dict.fromkeys(files))  # "**/*" matches a folder and the files in it
    skipped = list(dict.fromkeys(skipped))
    base = glob_base(pattern)
    return _read_files(pattern, (files, skipped), require_coords, folder=base)


def glob_listing(matches: Iterable[str]) -> Iterator[Listed]:
    """What a glob's ``matches`` (sorted) name, in order: matched files, and the walk of matched
    folders (:func:`walk_folder`); repeats are the caller's to drop (a folder and its files may
    both match)."""
    exts = image_extensions()
    for m in matches:
        p = Path(m)
        if p.is_dir():
            yield from walk_folder(p)
            continue
        try:
            mode = p.stat().st_mode
        except OSError as exc:
            yield m, _link_reason(p) if p.is_symlink() else _os_reason(exc)
            continue
        if not stat.S_ISREG(mode):
            yield m, "not a regular file"
            continue
        reason = _classify(p, exts)
        yield (p, None) if reason is None else (m, reason)


def glob_base(pattern: str) -> Path:
    """The folder a glob pattern starts in (its parts before the first wildcard)."""
    parts = Path(pattern).parts
    keep = []
    for part in parts:
        if looks_like_glob(part):
            break
        keep.append(part)
    return Path(*keep) if keep else Path(".")


def _read_files(
    source: str, listing: tuple[list[Path], list[tuple[str, str]]], require_coords: bool, *, folder: Path
) -> PhotoInputs:
    files, skipped = listing
    found = photo_files(files, require_coords)
    hint = manifest_hint(folder) if found.skipped else None
    return PhotoInputs(found.paths, found.ids, found.coords, [*skipped, *found.skipped], source=source, hint=hint)


def photo_files(files: Sequence[Path], require_coords: bool) -> PhotoInputs:
    """Image files found on disk as photos: ids are the file stems; with ``require_coords`` each
    gets its EXIF GPS position (``coords`` ``(N, 2)``) and those without one are skipped
    (``no EXIF GPS position``); otherwise ``coords`` is ``None``."""
    if not require_coords:
        return PhotoInputs([str(f) for f in files], [f.stem for f in files], None)
    paths, ids, coords, skipped = [], [], [], []
    for f in files:
        ll = exif_gps(f)
        if ll is None:
            skipped.append((str(f), "no EXIF GPS position"))
            continue
        paths.append(str(f))
        ids.append(f.stem)
        coords.append(ll)
    return PhotoInputs(paths, ids, np.asarray(coords, dtype=np.float64).reshape(-1, 2), skipped)


def exif_gps(path: str | Path) -> tuple[float, float] | None:
    """``(lat, lon)`` degrees from a photo's EXIF GPS tags, or ``None`` when it has none."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            gps = img.getexif().get_ifd(0x8825)
    except Exception:
        return None
    if not gps or 2 not in gps or 4 not in gps:
        return None

    def deg(v: object) -> float:
        d, m, s = (float(x) for x in v)  # type: ignore[attr-defined]
        return d + m / 60.0 + s / 3600.0

    try:
        lat, lon = deg(gps[2]), deg(gps[4])
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if str(gps.get(1, "N")).upper().startswith("S"):
        lat = -lat
    if str(gps.get(3, "E")).upper().startswith("W"):
        lon = -lon
    if not (np.isfinite(lat) and np.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def manifest_hint(folder: Path) -> str | None:
    """``"use the manifest beside the photos: --photos DIR/metadata.csv"`` when ``folder`` holds one.

    A manifest here is a CSV/Parquet file with latitude and longitude columns (``metadata.csv``
    first, then others by name).
    """
    if not folder.is_dir():
        return None
    try:
        cands = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file()),
            key=lambda p: (p.name.lower() != "metadata.csv", p.name),
        )
    except OSError:
        return None
    for c in cands:
        try:
            cols = _columns_of(c)
        except Exception:
            continue
        if _match(cols, None, LAT_COLUMNS) and _match(cols, None, LON_COLUMNS):
            return f"the photos have no EXIF GPS position; use the manifest beside them: --photos {c}"
    return None


# --------------------------------------------------------------------------- manifests


def _columns_of(path: Path) -> list[str]:
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    return [h.strip() for h in header.rstrip("\r\n").split(sep)]


def _match(columns: Sequence[str], wanted: str | None, candidates: Sequence[str]) -> str | None:
    """The column named ``wanted`` (exact, else case-insensitive), or the first candidate present."""
    if wanted is not None:
        if wanted in columns:
            return wanted
        low = [c for c in columns if c.lower() == wanted.lower()]
        return low[0] if len(low) == 1 else None
    by_lower: dict[str, str] = {}
    for c in columns:
        by_lower.setdefault(c.lower(), c)
    for cand in candidates:
        if cand in by_lower:
            return by_lower[cand]
    return None


def _read_table(path: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    from terraloc.table import read_csv

    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:
            raise InputError(f"cannot read Parquet file ({type(exc).__name__}: {exc})", path=path) from None
        df = df.astype(str).where(df.notna(), "")
        df["_line"] = np.arange(len(df)) + 2
        return df
    if path.suffix.lower() == ".tsv":
        return _read_tsv(path)
    return read_csv(path, file_names=True)  # names may hold non-UTF-8 bytes (surrogateescape)


def _read_tsv(path: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, skip_blank_lines=False)
    except Exception as exc:
        raise InputError(f"malformed TSV: {str(exc).strip().splitlines()[-1]}", path=path) from None
    df["_line"] = np.arange(len(df)) + 2
    return df


def _missing(path: Path, wanted: str, columns: list[str], option: str) -> InputError:
    present = ", ".join(columns) or "none"
    return InputError(f"missing column(s) {wanted}; found {present} (set {option})", path=path, field=wanted)


def read_manifest(path: str | Path, **options: Unpack[InputOptions]) -> PhotoInputs:
    """Read a CSV/TSV/Parquet manifest of photos (see the module docstring for the columns).

    Args:
        path: the manifest.
        id_col: the column identifying each photo. When the manifest also has a path column
            (``path``, ``file``, ...) ids come from ``id_col`` and files from the path column;
            otherwise the id cells are the file names.
        lat_col, lon_col: coordinate columns; detected when ``None``.
        require_coords: coordinate columns must exist and have a value in every row.
        check_files: skip rows whose file does not exist (reason ``line N: file not found``).

    Raises:
        InputError: missing columns, blank/duplicate ids, non-numeric or out-of-range
            coordinates, no data rows; the message names the file, line and column.
    """
    path = Path(path)
    return manifest_rows(_read_table(path), path, **options)


def manifest_rows(
    df,  # type: ignore[no-untyped-def]
    path: Path,
    *,
    empty_ok: bool = False,
    **options: Unpack[InputOptions],
) -> PhotoInputs:
    """The rows of a manifest read as strings with a ``_line`` column (the whole file, or one chunk
    of it: ``empty_ok`` then accepts a chunk of blank lines); see :func:`read_manifest`."""
    from terraloc.evaluate.ids import check_unique_ids
    from terraloc.table import parse_float_column

    id_col, lat_col, lon_col = options.get("id_col"), options.get("lat_col"), options.get("lon_col")
    require_coords, check_files = options.get("require_coords", False), options.get("check_files", True)
    columns = [c for c in df.columns if c != "_line"]
    id_c = _match(columns, id_col, ())
    if id_col is not None and id_c is None:
        raise _missing(path, id_col, columns, "--id-col")
    path_c = _match(columns, None, PATH_COLUMNS)
    if id_c is not None and path_c is not None and path_c != id_c and not _is_pathlike(path_c):
        path_c = id_c  # e.g. --id-col photo in a file whose "id"/"name" column is not a path
    if path_c is None:
        path_c = id_c
    if path_c is None:
        others = [c for c in columns if c.lower() not in (*LAT_COLUMNS, *LON_COLUMNS)]
        if len(others) == 1:
            path_c = others[0]
        else:
            raise InputError(
                f"no path or id column (looked for {', '.join(PATH_COLUMNS[:8])}, ...); "
                f"found {', '.join(columns) or 'none'} (set --id-col)",
                path=path,
            )
    if id_c is None:
        id_c = path_c
    lat_c = _match(columns, lat_col, LAT_COLUMNS)
    lon_c = _match(columns, lon_col, LON_COLUMNS)
    if lat_col is not None and lat_c is None:
        raise _missing(path, lat_col, columns, "--lat-col")
    if lon_col is not None and lon_c is None:
        raise _missing(path, lon_col, columns, "--lon-col")
    if require_coords and (lat_c is None or lon_c is None):
        name, opt = ("latitude", "--lat-col") if lat_c is None else ("longitude", "--lon-col")
        raise InputError(
            f"no {name} column (looked for {', '.join(LAT_COLUMNS if lat_c is None else LON_COLUMNS)}); "
            f"found {', '.join(columns) or 'none'} (set {opt})",
            path=path,
        )
    # Blank lines inside the file become rows of empty cells: drop them, keeping line numbers.
    used = [c for c in dict.fromkeys([id_c, path_c, lat_c, lon_c]) if c is not None]
    cells = df[used].apply(lambda c: c.str.strip())
    df = df[(cells != "").any(axis=1)]
    if len(df) == 0:
        if empty_ok:
            return PhotoInputs([], [], None, [], [], str(path), None, {})
        raise InputError("no data rows", path=path)
    lines = [int(x) for x in df["_line"].to_numpy()]
    ids = df[id_c].str.strip().tolist()
    check_unique_ids(ids, lines, path, id_c, "image id")
    coords = None
    if lat_c is not None and lon_c is not None:
        lat = parse_float_column(df, lat_c, path, allow_blank=not require_coords)
        lon = parse_float_column(df, lon_c, path, allow_blank=not require_coords)
        coords = np.stack([lat.values, lon.values], axis=1)
        _check_coords(coords, lines, path, lat_c, lon_c, allow_blank=not require_coords)
    cols = {"id": id_c, "path": path_c}
    if lat_c is not None and lon_c is not None:
        cols.update(lat=lat_c, lon=lon_c)
    base = path.parent
    rels = df[path_c].str.strip().tolist()
    paths: list[str] = []
    keep: list[int] = []
    skipped: list[tuple[str, str]] = []
    for i, rel in enumerate(rels):
        if rel == "":
            if check_files:
                skipped.append((f"{path} line {lines[i]}", f"line {lines[i]}: empty {path_c}"))
                continue
            full = ""
        else:
            q = Path(rel).expanduser()
            full = str(q if q.is_absolute() else base / q)
        if check_files and not os.path.isfile(full):
            skipped.append((full, f"{path.name} line {lines[i]}: file not found"))
            continue
        paths.append(full)
        keep.append(i)
    kept_coords = None if coords is None else coords[keep]
    return PhotoInputs(
        paths,
        [ids[i] for i in keep],
        kept_coords,
        skipped,
        [lines[i] for i in keep],
        str(path),
        None,
        cols,
    )


def read_coordinates(
    path: str | Path, *, lat_col: str | None = None, lon_col: str | None = None
) -> NDArray[np.float64]:
    """``(N, 2)`` ``(lat, lon)`` degrees from a CSV/TSV/Parquet table with coordinate columns only.

    Columns are matched as in :func:`read_manifest` (case-insensitive, detected when ``None``);
    CSV lines starting with ``#`` are comments (geocell files carry them).

    Raises:
        InputError: missing columns, blank, non-numeric or out-of-range values (file, line, column).
    """
    from terraloc.table import parse_float_column, read_csv

    path = Path(path)
    df = read_csv(path, skip_comments=True) if path.suffix.lower() == ".csv" else _read_table(path)
    columns = [c for c in df.columns if c != "_line"]
    lat_c = _match(columns, lat_col, LAT_COLUMNS)
    lon_c = _match(columns, lon_col, LON_COLUMNS)
    for got, given, option, cands in (
        (lat_c, lat_col, "--lat-col", LAT_COLUMNS),
        (lon_c, lon_col, "--lon-col", LON_COLUMNS),
    ):
        if got is None:
            if given is not None:
                raise _missing(path, given, columns, option)
            raise InputError(
                f"no {'latitude' if option == '--lat-col' else 'longitude'} column (looked for {', '.join(cands)}); "
                f"found {', '.join(columns) or 'none'} (set {option})",
                path=path,
            )
    assert lat_c is not None and lon_c is not None
    if len(df) == 0:
        raise InputError("no data rows", path=path)
    lat = parse_float_column(df, lat_c, path).values
    lon = parse_float_column(df, lon_c, path).values
    coords = np.stack([lat, lon], axis=1)
    _check_coords(coords, [int(x) for x in df["_line"]], path, lat_c, lon_c, allow_blank=False)
    return coords


def _is_pathlike(col: str) -> bool:
    return col.lower() in PATH_COLUMNS[:11]  # path/file/image/photo names, not the generic id/name


def _check_coords(
    coords: NDArray[np.float64], lines: list[int], path: Path, lat_c: str, lon_c: str, *, allow_blank: bool
) -> None:
    """Raise at the first out-of-range or non-finite coordinate (``NaN`` only where ``allow_blank``)."""
    lat, lon = coords[:, 0], coords[:, 1]
    blank_lat, blank_lon = np.isnan(lat), np.isnan(lon)
    bad_lat = np.isinf(lat) | (blank_lat & (not allow_blank))
    bad_lon = np.isinf(lon) | (blank_lon & (not allow_blank))
    checks = (
        (bad_lat, lat_c, "latitude is not a finite number"),
        (bad_lon, lon_c, "longitude is not a finite number"),
        (~blank_lat & (np.abs(np.nan_to_num(lat)) > 90), lat_c, "latitude {v} is outside [-90, 90]"),
        (~blank_lon & (np.abs(np.nan_to_num(lon)) > 180), lon_c, "longitude {v} is outside [-180, 180]"),
        (blank_lat != blank_lon, lat_c if blank_lat.any() else lon_c, "only one of latitude and longitude is given"),
    )
    for bad, col, msg in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            v = lat[i] if col == lat_c else lon[i]
            raise InputError(msg.format(v=v), path=path, row=lines[i], field=col)
