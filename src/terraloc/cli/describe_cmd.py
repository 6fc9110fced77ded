"""``terraloc describe``: offline place descriptions (MP16-Pro layout) for coordinates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from terraloc.cli.app import app, err_console, out_console


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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary instead of the table.")] = False,
) -> None:
    """Describe coordinates with offline GeoNames places (neighbourhood/city/county/state/country)."""
    from terraloc.errors import InputError
    from terraloc.geo.describe import describe_coords, read_mp16pro, write_descriptions

    if (coords is None) == (mp16pro is None):
        raise InputError("give exactly one of --coords FILE or --mp16pro FILE", field="--coords")
    if not 0 <= nearby <= 5:
        raise InputError(f"must be between 0 and 5, got {nearby}", field="--nearby")
    if "{" not in template:
        raise InputError("has no {field} to fill", field="--template")
    t0 = time.perf_counter()
    if mp16pro is not None:
        table = read_mp16pro(mp16pro, template)
    else:
        assert coords is not None
        latlon = _read_coords(coords)
        t0 = time.perf_counter()
        table = describe_coords(latlon, template=template, nearby=nearby)
    elapsed = time.perf_counter() - t0
    write_descriptions(table, out)
    summary = {
        "rows": table.num_rows,
        "out": str(out),
        "seconds": round(elapsed, 3),
        "rows_per_s": round(table.num_rows / elapsed) if elapsed > 0 else None,
        "example": table.column("description")[0].as_py() if table.num_rows else None,
    }
    if as_json:
        out_console().print_json(json.dumps(summary))
    else:
        err_console.print(
            f"{summary['rows']} row(s) described into {out} in {elapsed:.2f} s "
            f"({summary['rows_per_s']} rows/s); e.g. {summary['example']!r}",
            markup=False,
        )
