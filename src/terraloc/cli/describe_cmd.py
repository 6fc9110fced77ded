"""``terraloc describe``: offline place descriptions (MP16-Pro layout) for coordinates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from terraloc.cli.app import app, bench_app, err_console, out_console


def _read_coords(path: Path) -> np.ndarray:
    from terraloc.errors import InputError
    from terraloc.geo.coords import validate_latlon
    from terraloc.search.gallery import read_coords_file

    if path.suffix.lower() != ".parquet":
        return read_coords_file(path)
    import pyarrow.parquet as pq

    if not path.exists():
        raise InputError("file not found", path=path)
    try:
        names = pq.read_schema(path).names
    except Exception as exc:
        raise InputError(f"not a Parquet file ({exc})", path=path) from None
    cols = {c.lower(): c for c in names}
    picked = []
    for want, alts in (("lat", ("lat", "latitude")), ("lon", ("lon", "lng", "longitude"))):
        hit = next((cols[a] for a in alts if a in cols), None)
        if hit is None:
            raise InputError(f"missing column '{want}'; found {', '.join(names) or 'none'}", path=path)
        picked.append(hit)
    t = pq.read_table(path, columns=picked)
    arr = np.stack([t.column(picked[0]).to_numpy(), t.column(picked[1]).to_numpy()], axis=1).astype(np.float64)
    if len(arr) == 0:
        raise InputError("no coordinate rows", path=path)
    return validate_latlon(arr, source=str(path), rows=np.arange(len(arr)) + 1)


_ID_NAMES = ("img_id", "id", "image", "path", "photo", "file")


def _read_ids(path: Path, id_col: str | None, n: int) -> list[str] | None:
    """The id column of a coordinates file (``--id-col``, else the first of IMG_ID/id/image/path), if any."""
    from terraloc.errors import InputError

    if path.suffix.lower() == ".npy":
        return None
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
    else:
        import pandas as pd

        names = list(pd.read_csv(path, nrows=0).columns)
    lower = {c.lower(): c for c in names}
    if id_col is not None:
        col = lower.get(id_col.lower())
        if col is None:
            raise InputError(f"no column '{id_col}'; found {', '.join(names)}", path=path, field="--id-col")
    else:
        col = next((lower[c] for c in _ID_NAMES if c in lower), None)
        if col is None:
            return None
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        ids = [str(v) for v in pq.read_table(path, columns=[col]).column(col).to_pylist()]
    else:
        import pandas as pd

        ids = pd.read_csv(path, usecols=[col], dtype=str, keep_default_na=False)[col].tolist()
    if len(ids) != n:
        raise InputError(f"id column has {len(ids)} rows, coordinates {n}", path=path, field=col)
    return ids


@app.command("describe")
def describe_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")],
    coords: Annotated[
        Path | None, typer.Option("--coords", help="CSV or Parquet with lat/lon columns (any case), or (N,2) .npy.")
    ] = None,
    mp16pro: Annotated[
        Path | None, typer.Option("--mp16pro", help="Convert MP16-Pro's own description CSV instead of --coords.")
    ] = None,
    template: Annotated[
        str,
        typer.Option("--template", help="Template with {neighbourhood} {city} {county} {state} {country}."),
    ] = "a photo taken in {city}, {state}, {country}.",
    nearby: Annotated[int, typer.Option("--nearby", help="Further nearest populated places to list (0-5).")] = 2,
    id_col: Annotated[
        str | None, typer.Option("--id-col", help="Id column kept as 'id' (default: IMG_ID/id/image/path if present).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary instead of the table.")] = False,
) -> None:
    """Describe coordinates with offline GeoNames places (neighbourhood/city/county/state/country)."""
    from terraloc.errors import InputError
    from terraloc.geo.describe import _place_table, describe_coords, read_mp16pro, write_descriptions

    if (coords is None) == (mp16pro is None):
        raise InputError("give exactly one of --coords FILE or --mp16pro FILE", field="--coords")
    if not 0 <= nearby <= 5:
        raise InputError(f"must be between 0 and 5, got {nearby}", field="--nearby")
    if "{" not in template:
        raise InputError("has no {field} to fill", field="--template")
    t0 = time.perf_counter()
    load_s = 0.0
    if mp16pro is not None:
        table = read_mp16pro(mp16pro, template)
        elapsed = time.perf_counter() - t0
    else:
        assert coords is not None
        latlon = _read_coords(coords)
        t_load = time.perf_counter()
        _place_table()
        describe_coords(latlon[:1], template=template, nearby=nearby)  # one-off: places, dictionaries
        t0 = time.perf_counter()
        load_s = t0 - t_load
        table = describe_coords(latlon, template=template, nearby=nearby)
        elapsed = time.perf_counter() - t0
        ids = _read_ids(coords, id_col, len(latlon))
        if ids is not None:
            import pyarrow as pa

            table = table.add_column(0, "id", pa.array(ids, type=pa.string()))
    write_descriptions(table, out)
    summary = {
        "rows": table.num_rows,
        "out": str(out),
        "seconds": round(elapsed, 3),
        "rows_per_s": round(table.num_rows / elapsed) if elapsed > 0 else None,
        "table_load_s": round(load_s, 3),
        "example": table.column("description")[0].as_py() if table.num_rows else None,
    }
    if as_json:
        out_console().print_json(json.dumps(summary))
    else:
        err_console.print(
            f"{summary['rows']} row(s) described into {out} in {elapsed:.2f} s "
            f"({summary['rows_per_s']} rows/s, after a {load_s:.1f} s one-off table load); "
            f"e.g. {summary['example']!r}",
            markup=False,
        )


@bench_app.command("describe")
def bench_describe_command(
    rows: Annotated[int, typer.Option("--rows", help="Random coordinates to describe (MP-16 has 4.7M).")] = 4_700_000,
    nearby: Annotated[int, typer.Option("--nearby", help="Further nearest places per row.")] = 2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    points: Annotated[
        str,
        typer.Option(
            "--points",
            help="mp16: GeoCLIP's 100K MP-16 coordinates repeated with 1 km jitter; sphere: uniform on the sphere.",
        ),
    ] = "mp16",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
) -> None:
    """Rows/s of `terraloc describe` (after the one-off table load; Parquet write included)."""
    import tempfile

    from terraloc.errors import InputError
    from terraloc.geo.describe import _place_table, describe_coords, write_descriptions

    if rows < 1:
        raise InputError("must be at least 1", field="--rows")
    if not 0 <= nearby <= 5:
        raise InputError(f"must be between 0 and 5, got {nearby}", field="--nearby")
    rng = np.random.default_rng(seed)
    if points == "sphere":
        v = rng.normal(size=(rows, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        latlon = np.stack([np.degrees(np.arcsin(v[:, 2])), np.degrees(np.arctan2(v[:, 1], v[:, 0]))], axis=1)
    elif points == "mp16":
        from terraloc.search.gallery import geoclip_gallery_coords

        base = geoclip_gallery_coords().astype(np.float32).astype(np.float64)
        latlon = base[rng.integers(0, len(base), rows)] + rng.normal(scale=0.01, size=(rows, 2))
        latlon[:, 0] = np.clip(latlon[:, 0], -90, 90)
        latlon[:, 1] = (latlon[:, 1] + 180) % 360 - 180
    else:
        raise InputError(f"unknown point set '{points}' (mp16 or sphere)", field="--points")
    t0 = time.perf_counter()
    _place_table()
    describe_coords(latlon[:10], nearby=nearby)  # builds the per-place descriptions and dictionaries once
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = describe_coords(latlon, nearby=nearby)
    t_describe = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_descriptions(table, Path(tmp) / "d.parquet")
        t_write = time.perf_counter() - t0
        size = (Path(tmp) / "d.parquet").stat().st_size
    res = {
        "rows": rows,
        "points": points,
        "nearby": nearby,
        "load_s": round(t_load, 2),
        "describe_s": round(t_describe, 2),
        "write_s": round(t_write, 2),
        "rows_per_s": round(rows / (t_describe + t_write)),
        "parquet_mb": round(size / 1e6, 1),
    }
    if as_json:
        out_console().print_json(json.dumps(res))
        return
    from rich.table import Table

    t = Table("rows", "points", "nearby", "load s", "describe s", "write s", "rows/s", "Parquet MB")
    keys = ("rows", "points", "nearby", "load_s", "describe_s", "write_s", "rows_per_s", "parquet_mb")
    t.add_row(*(str(res[k]) for k in keys))
    out_console().print(t)
