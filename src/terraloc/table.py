"""Reading user CSV files with one-line, located errors."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from terraloc.errors import InputError, MissingResourceError


def read_csv(path: str | Path, *, skip_comments: bool = False, file_names: bool = False) -> pd.DataFrame:
    """Read a CSV as strings, with clear errors for missing, unreadable or empty files.

    Args:
        path: the file.
        skip_comments: skip lines starting with ``#`` (used by geocell files).
        file_names: the file lists photo file names, which may hold bytes that are not UTF-8
            (as ``terraloc predict`` writes them): such bytes are kept as lone surrogates
            (``surrogateescape``), so ids match the names Python reads from the file system.

    Returns:
        A DataFrame of ``str`` cells (``""`` for empty cells), with a ``_line`` column
        holding each row's 1-based line number in the file (header = line 1).
    """
    path = Path(path)
    if not path.exists():
        raise MissingResourceError(f"{path}: file not found")
    if path.is_dir():
        raise InputError("is a folder, expected a CSV file", path=path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path)
    try:
        df = pd.read_csv(
            path,
            # object, not str: pandas' Arrow-backed strings cannot hold the surrogates of file_names
            dtype=object if file_names else str,
            keep_default_na=False,
            skip_blank_lines=False,
            comment="#" if skip_comments else None,
            encoding_errors="surrogateescape" if file_names else "strict",
        )
    except UnicodeDecodeError as exc:
        raise InputError(f"not a UTF-8 text file ({exc.reason})", path=path) from None
    except pd.errors.EmptyDataError:
        raise InputError("file is empty", path=path) from None
    except (pd.errors.ParserError, csv.Error) as exc:
        raise InputError(f"malformed CSV: {str(exc).strip().splitlines()[-1]}", path=path) from None
    # pandas numbers data rows from 0 after the header at line 1 (blank lines kept above).
    df["_line"] = np.arange(len(df)) + 2
    return df


def require_columns(df: pd.DataFrame, columns: list[str], path: str | Path) -> None:
    """Raise :class:`InputError` naming the missing columns and those present."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        present = [c for c in df.columns if c != "_line"]
        raise InputError(
            f"missing column(s) {', '.join(missing)}; found {', '.join(present) or 'none'}",
            path=path,
        )


@dataclass(frozen=True)
class ParsedFloats:
    """Parsed numeric column: ``values`` with NaN where the cell was blank."""

    values: NDArray[np.float64]
    blank: NDArray[np.bool_]


def parse_float_column(df: pd.DataFrame, column: str, path: str | Path, *, allow_blank: bool = False) -> ParsedFloats:
    """Parse a column of numbers; report the first non-numeric or blank cell by line."""
    raw = df[column].astype(str).str.strip()
    blank = (raw == "").to_numpy()
    values = pd.to_numeric(raw.where(~blank, "nan"), errors="coerce").to_numpy(dtype=np.float64)
    # A literal "nan" parses (and is rejected later as non-finite with a clearer message).
    bad = np.isnan(values) & ~blank & ~raw.str.lower().isin(["nan", "+nan", "-nan"]).to_numpy()
    if not allow_blank:
        bad |= blank
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        cell = raw.iloc[i]
        shown = cell if len(cell) <= 40 else f"{cell[:37]}... ({len(cell)} characters)"
        what = "is empty" if cell == "" else f"'{shown}' is not a number"
        raise InputError(what, path=path, row=int(df["_line"].iloc[i]), field=column)
    return ParsedFloats(values, blank)
