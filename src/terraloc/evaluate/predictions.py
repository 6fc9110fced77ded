"""Prediction readers.

Two formats are recognised from the header:

* **terraloc** (what ``terraloc predict --format csv`` writes): CSV with columns
  ``image,lat,lon`` and optional extras (``rank``, ``probability``, ``error``, ...). When a
  ``rank`` column is present only rank-1 rows are read. A row with both ``lat`` and ``lon``
  blank is an image the predictor failed on: it counts as *no prediction*. JSONL with one
  ``{"image": ..., "lat": ..., "lon": ...}`` object per line is read the same way.
* **GeoEstimation** (Müller-Budack et al., as published): CSV with
  ``img_id,gt_lat,predicted_lat,gt_long,predicted_long,great_circle_distance``, followed by a
  blank line, a summary header and a line of published accuracies (fractions). The trailer
  is parsed and returned as :attr:`Predictions.published`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from terraloc.errors import InputError, MissingResourceError
from terraloc.evaluate.ids import check_unique_ids
from terraloc.evaluate.thresholds import THRESHOLD_KEYS
from terraloc.geo.coords import validate_latlon
from terraloc.table import parse_float_column, read_csv, require_columns

GEOESTIMATION_COLUMNS = ["img_id", "gt_lat", "predicted_lat", "gt_long", "predicted_long"]
# GeoEstimation's summary names for the thresholds, coarse order as THRESHOLDS_KM
_PUBLISHED_THRESHOLDS = dict(zip(("street", "city", "region", "country", "continent"), THRESHOLD_KEYS, strict=True))


@dataclass(frozen=True)
class Predictions:
    """One predicted location per image.

    Attributes:
        ids: ``(N,)`` image ids as written in the file.
        coords: ``(N, 2)`` ``(lat, lon)`` degrees; NaN rows are images without a prediction.
        path: the file read.
        format: ``"terraloc"`` or ``"geoestimation"``.
        published: published accuracies in percent keyed by threshold (``"1"`` ... ``"2500"``)
            plus ``"mean_km"`` when the file carries them, else empty.
    """

    ids: list[str]
    coords: NDArray[np.float64]
    path: Path
    format: str
    published: dict[str, float] = field(default_factory=dict)
    extras: PredictionExtras | None = None

    def __len__(self) -> int:
        return len(self.ids)


CONFIDENCE_THRESHOLDS = ("1", "25", "200", "750", "2500")


@dataclass(frozen=True)
class PredictionExtras:
    """Confidence columns of terraloc predictions, row-aligned with :class:`Predictions`.

    Attributes:
        confidence: ``(N, 5)`` P(error <= 1/25/200/750/2500 km), NaN where a row has none; or ``None``.
        features: ``(names, (N, F) values)`` of ``f_<name>`` columns / ``"features"`` objects; or ``None``.
        identity: per row the configuration key (``config`` column) or model description (JSONL ``model``).
        abstained: ``(N,)`` bool.
    """

    confidence: NDArray[np.float64] | None
    features: tuple[tuple[str, ...], NDArray[np.float64]] | None
    identity: list[Any]
    abstained: NDArray[np.bool_]


def _extras(df: pd.DataFrame, path: Path) -> PredictionExtras:
    n = len(df)
    conf = None
    ccols = [f"confidence_{t}" for t in CONFIDENCE_THRESHOLDS]
    if all(c in df.columns for c in ccols):
        vals = [parse_float_column(df, c, path, allow_blank=True) for c in ccols]
        conf = np.stack([np.where(v.blank, np.nan, v.values) for v in vals], 1)
        if np.isnan(conf).all():
            conf = None
    fcols = [c for c in df.columns if c.startswith("f_")]
    feats = None
    if fcols:
        vals = [parse_float_column(df, c, path, allow_blank=True) for c in fcols]
        feats = (tuple(c[2:] for c in fcols), np.stack([np.where(v.blank, np.nan, v.values) for v in vals], 1))
    ident: list[Any] = list(df["config"]) if "config" in df.columns else [None] * n
    if "_model" in df.columns:
        ident = list(df["_model"])
    ab = df["abstained"].str.strip().isin(["1", "true", "True"]).to_numpy() if "abstained" in df.columns else None
    return PredictionExtras(conf, feats, ident, np.zeros(n, dtype=bool) if ab is None else ab.astype(bool))


def _split_geoestimation_trailer(df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """Separate data rows from the published summary lines at the end."""
    first = df["img_id"].str.strip()
    is_summary = first.str.contains("acc", case=False) & first.str.contains("km", case=False)
    if not is_summary.any():
        return df[first != ""], {}
    pos = int(np.flatnonzero(is_summary.to_numpy())[0])
    header_row = df.iloc[pos]
    names = [str(header_row[c]).strip() for c in df.columns if c != "_line"]
    published: dict[str, float] = {}
    if pos + 1 < len(df):
        values = df.iloc[pos + 1]
        for col, name in zip([c for c in df.columns if c != "_line"], names, strict=True):
            cell = str(values[col]).strip()
            if not cell:
                continue
            try:
                num = float(cell)
            except ValueError:
                raise InputError(
                    f"published summary value '{cell}' for '{name}' is not a number",
                    path=path,
                    row=int(values["_line"]),
                ) from None
            for word, thr in _PUBLISHED_THRESHOLDS.items():
                if name.lower().startswith(word):
                    published[thr] = round(num * 100, 4)
            if "mean" in name.lower():
                published["mean_km"] = num
    data = df.iloc[:pos]
    return data[data["img_id"].str.strip() != ""], published


def _read_geoestimation(df: pd.DataFrame, path: Path) -> Predictions:
    data, published = _split_geoestimation_trailer(df, path)
    if len(data) == 0:
        raise InputError("no prediction rows", path=path)
    lat = parse_float_column(data, "predicted_lat", path).values
    lon = parse_float_column(data, "predicted_long", path).values
    lines = data["_line"].to_numpy()
    coords = validate_latlon(np.stack([lat, lon], 1), source=str(path), rows=lines)
    ids = data["img_id"].str.strip().tolist()
    check_unique_ids(ids, lines, path, "img_id", "prediction for image")
    return Predictions(ids, coords, path, "geoestimation", published)


def _read_terraloc_frame(df: pd.DataFrame, path: Path) -> Predictions:
    require_columns(df, ["image", "lat", "lon"], path)
    df = df[(df[["image", "lat", "lon"]].apply(lambda c: c.str.strip()) != "").any(axis=1)]
    if "rank" in df.columns:
        rank = parse_float_column(df, "rank", path, allow_blank=True)
        df = df[(rank.values == 1) | rank.blank]
    if len(df) == 0:
        raise InputError("no prediction rows", path=path)
    lat = parse_float_column(df, "lat", path, allow_blank=True)
    lon = parse_float_column(df, "lon", path, allow_blank=True)
    lines = df["_line"].to_numpy()
    half = lat.blank ^ lon.blank
    if half.any():
        i = int(np.flatnonzero(half)[0])
        fld = "lat" if lat.blank[i] else "lon"
        raise InputError("is empty while the other coordinate is set", path=path, row=int(lines[i]), field=fld)
    coords = np.stack([lat.values, lon.values], 1)
    has = ~lat.blank
    if has.any():
        validate_latlon(coords[has], source=str(path), rows=lines[has])
    ids = df["image"].str.strip().tolist()
    check_unique_ids(ids, lines, path, "image", "prediction for image")
    return Predictions(ids, coords, path, "terraloc", extras=_extras(df, path))


def _read_jsonl(path: Path) -> Predictions:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON ({exc.msg})", path=path, row=lineno) from None
            if not isinstance(obj, dict):
                raise InputError("expected a JSON object", path=path, row=lineno)
            for key in ("image", "lat", "lon"):
                if key not in obj:
                    raise InputError("missing key", path=path, row=lineno, field=key)
            if obj.get("rank", 1) not in (1, None):
                continue
            row: dict[str, Any] = {
                "image": str(obj["image"]),
                "lat": "" if obj["lat"] is None else str(obj["lat"]),
                "lon": "" if obj["lon"] is None else str(obj["lon"]),
                "_line": lineno,
            }
            conf = obj.get("confidence")
            if isinstance(conf, dict):
                row |= {f"confidence_{t}": "" if conf.get(t) is None else str(conf[t]) for t in CONFIDENCE_THRESHOLDS}
            feats = obj.get("features")
            if isinstance(feats, dict):
                row |= {f"f_{k}": "" if v is None else str(v) for k, v in feats.items()}
            if isinstance(obj.get("model"), dict) and obj["model"]:
                row["_model"] = obj["model"]
            row["abstained"] = "1" if obj.get("abstained") else ""
            rows.append(row)
    if not rows:
        raise InputError("no prediction rows", path=path)
    keys = list(dict.fromkeys(k for r in rows for k in r))  # rows may differ in their confidence keys
    rows = [{k: r.get(k, "") for k in keys} for r in rows]
    return _read_terraloc_frame(pd.DataFrame(rows, dtype=object), path)  # object: names may hold surrogates


def load_predictions(path: str | Path) -> Predictions:
    """Load predictions, detecting the format from the file's extension and header.

    Raises:
        MissingResourceError: the file does not exist.
        InputError: unknown columns, bad numbers, out-of-range coordinates, duplicate ids,
            empty files; the message names the file, the line and the field.
    """
    path = Path(path)
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        if not path.exists():
            raise MissingResourceError(f"{path}: file not found")
        if path.stat().st_size == 0:
            raise InputError("file is empty", path=path)
        return _read_jsonl(path)
    df = read_csv(path, file_names=True)
    if all(c in df.columns for c in GEOESTIMATION_COLUMNS):
        return _read_geoestimation(df, path)
    if all(c in df.columns for c in ("image", "lat", "lon")):
        return _read_terraloc_frame(df, path)
    present = ", ".join(c for c in df.columns if c != "_line")
    raise InputError(
        "unrecognised predictions format: expected columns image,lat,lon (terraloc) or "
        f"img_id,predicted_lat,predicted_long (GeoEstimation); found {present}",
        path=path,
    )
