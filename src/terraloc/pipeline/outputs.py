"""Writers for prediction results: CSV (what ``terraloc eval`` reads), JSON Lines, GeoJSON, an
offline HTML map (vendored Leaflet + bundled country outlines, no network), and a Rich table."""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from terraloc.geo.places import PLACE_COLUMNS
from terraloc.pipeline.types import ImagePrediction

_SURROGATE_RE = re.compile("[\ud800-\udfff]")

CSV_COLUMNS = [
    "image",
    *PLACE_COLUMNS,
    "model",
    "weights_hash",
    "error",
    # calibrated P(error <= t km) of the rank-1 answer (blank without a calibrator) and abstention
    "confidence_1",
    "confidence_25",
    "confidence_200",
    "confidence_750",
    "confidence_2500",
    "abstained",
]


#: Prediction file formats by file-name suffix (``json`` = JSON Lines).
FORMAT_BY_SUFFIX = {".csv": "csv", ".json": "json", ".jsonl": "json", ".geojson": "geojson"}


def _confidence_cells(pred: ImagePrediction) -> list[str]:
    conf = pred.confidence or {}
    return [f"{conf[t]:.4f}" if t in conf else "" for t in ("1", "25", "200", "750", "2500")] + [
        "1" if pred.abstained else ""
    ]


def _fmt(x: float) -> str:
    return f"{x:.6f}"


def csv_rows(pred: ImagePrediction) -> list[list[str]]:
    """Rows for one image: one per candidate (rank 1..k), or one row with blank lat/lon and the error."""
    bb = pred.model.get("backbone", {})
    model = f"{pred.model['head']}:{bb.get('id', '')}" if pred.model.get("head") else ""
    wh = str(bb.get("hash", ""))
    conf = _confidence_cells(pred)
    if pred.abstained:  # an explicit row: no location, its confidence, abstained = 1
        return [[pred.image, "", "", "", "", "", "", "", "", model, wh, "", *conf]]
    if not pred.ok or not pred.candidates:
        return [[pred.image, "", "", "", "", "", "", "", "", model, wh, pred.error or "no prediction", *conf]]
    return [
        [
            pred.image,
            str(c.rank),
            _fmt(c.lat),
            _fmt(c.lon),
            f"{c.probability:.6g}",
            c.city,
            c.admin1,
            c.country,
            c.country_code,
            model,
            wh,
            "",
            *conf,
        ]
        for c in pred.candidates
    ]


class StreamWriter:
    """Writes results incrementally (flushed per image) in ``csv`` or ``json`` (JSON Lines) format."""

    def __init__(self, fh: TextIO, fmt: str, write_header: bool = True) -> None:
        self.fh = fh
        self.fmt = fmt
        self._csv = csv.writer(fh, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None and write_header:
            self._csv.writerow(CSV_COLUMNS)
            fh.flush()

    def write(self, pred: ImagePrediction) -> None:
        if self._csv is not None:
            self._csv.writerows(csv_rows(pred))
        else:
            self.fh.write(json.dumps(pred.to_json(), ensure_ascii=False) + "\n")
        self.fh.flush()


def escape_surrogates(text: str) -> str:
    """JSON/JavaScript text with lone surrogates (undecodable file-name bytes) as ``\\udcXX`` escapes."""
    return _SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def geojson_text(preds: Iterable[ImagePrediction]) -> str:
    """The GeoJSON of :func:`geojson` as UTF-8-safe text (one line, newline-terminated)."""
    return escape_surrogates(json.dumps(geojson(preds), ensure_ascii=False)) + "\n"


def geojson(preds: Iterable[ImagePrediction]) -> dict[str, Any]:
    """A FeatureCollection of every image's :func:`geojson_features`."""
    return {"type": "FeatureCollection", "features": [f for p in preds for f in geojson_features(p)]}


def geojson_features(p: ImagePrediction) -> list[dict[str, Any]]:
    """One image's GeoJSON Features: a Point per candidate (``[lon, lat]``, per GeoJSON), each with
    the image's ``confidence``; its 90% confidence region first (a MultiPolygon of discs, ``"kind":
    "confidence_region"``) when it has one; an abstained image is one Feature with a null geometry."""
    from terraloc.confidence.region import confidence_region

    if p.abstained:
        props = {"image": p.image, "abstained": True, "confidence": p.confidence}
        return [{"type": "Feature", "geometry": None, "properties": props}]
    feats: list[dict[str, Any]] = []
    if p.region and p.region.get("places"):
        reg = confidence_region(
            p.region["places"], [1.0] * len(p.region["places"]), level=1.0, radius_km=p.region["radius_km"]
        )
        props = {"image": p.image, "kind": "confidence_region", "confidence": p.confidence}
        props |= {k: p.region[k] for k in ("level", "covered", "radius_km", "places")}
        feats.append({"type": "Feature", "geometry": reg["geometry"], "properties": props})
    for c in p.candidates:
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [c.lon, c.lat]},
                "properties": {
                    "image": p.image,
                    **{k: v for k, v in c.to_json().items() if k not in ("lat", "lon")},
                    "confidence": p.confidence,
                },
            }
        )
    return feats


def confidence_words(conf: dict[str, float] | None) -> str:
    """The confidence in plain words: ``"likely within 25 km: 82% · 200 km: 91% · ..."`` ("" without one)."""
    if not conf:
        return ""
    parts = [f"{t} km: {100 * conf[t]:.0f}%" for t in ("1", "25", "200", "750", "2500") if t in conf]
    return "likely within " + " · ".join(parts)


def _leaflet_css() -> str:
    from terraloc.config import package_data

    root = package_data("vendor", "leaflet")
    css = (root / "leaflet.css").read_text(encoding="utf-8")

    def inline(m: re.Match[str]) -> str:
        f = root / m.group(1)
        if not f.exists():
            return m.group(0)
        return "url(data:image/png;base64," + base64.b64encode(f.read_bytes()).decode() + ")"

    return re.sub(r"url\((images/[^)]+)\)", inline, css)


def html_map(preds: list[ImagePrediction], title: str = "terraloc predictions") -> str:
    """Self-contained HTML: vendored Leaflet 1.9.4, country outlines, top-k markers per image.

    No tile server and no CDN: everything is inlined, so the file works offline.
    """
    from terraloc.config import package_data
    from terraloc.geo.worldmap import countries_geojson

    js = package_data("vendor", "leaflet", "leaflet.js").read_text(encoding="utf-8")
    points = []
    regions = []
    for p in preds:
        words = confidence_words(p.confidence)
        for c in p.candidates:
            place = ", ".join(x for x in (c.city, c.admin1, c.country) if x)
            points.append([c.lat, c.lon, c.rank, c.probability, p.image, place, words if c.rank == 1 else ""])
        if p.region and not p.abstained:
            regions += [[a, b, p.region["radius_km"] * 1000.0] for a, b in p.region["places"]]
    data = json.dumps(
        {"countries": countries_geojson(), "points": points, "regions": regions},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    data = escape_surrogates(data.replace("</", "<\\/"))
    js = js.replace("</script", "<\\/script")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_leaflet_css()}</style>
<style>html,body,#map{{height:100%;margin:0}} .leaflet-container{{background:#cfe3f3}}
.legend{{background:#fff;padding:6px 8px;font:12px sans-serif}}</style>
</head><body><div id="map"></div>
<script>{js}</script>
<script>
const DATA = {data};
const map = L.map('map', {{worldCopyJump: true}}).setView([20, 0], 2);
L.geoJSON(DATA.countries, {{style: {{color: '#777', weight: 0.6, fillColor: '#f4f1ea', fillOpacity: 1}}}}).addTo(map);
const esc = s => String(s).replace(/[&<>"]/g, c => ({{'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}})[c]);
for (const [lat, lon, r] of DATA.regions) {{
  L.circle([lat, lon], {{radius: r, color: '#8e44ad', weight: 1, fillOpacity: 0.12}}).addTo(map);
}}
const pts = [];
for (const [lat, lon, rank, prob, image, place, words] of DATA.points) {{
  const m = L.circleMarker([lat, lon], {{radius: rank === 1 ? 7 : 4, color: rank === 1 ? '#c0392b' : '#2471a3',
    weight: 1, fillOpacity: rank === 1 ? 0.9 : 0.5}}).addTo(map);
  m.bindPopup('<b>' + esc(image) + '</b><br>rank ' + rank + ' &middot; p = ' + Number(prob).toPrecision(3) +
    '<br>' + esc(place) + (words ? '<br>' + esc(words) : '') + '<br>' + lat.toFixed(5) + ', ' + lon.toFixed(5));
  pts.push([lat, lon]);
}}
if (pts.length) map.fitBounds(pts, {{maxZoom: 8, padding: [30, 30]}});
const legend = L.control({{position: 'bottomleft'}});
legend.onAdd = () => {{ const d = L.DomUtil.create('div', 'legend');
  d.innerHTML = '<span style="color:#c0392b">&#9679;</span> rank 1 &nbsp; ' +
    '<span style="color:#2471a3">&#9679;</span> ranks 2..k &nbsp; ' +
    '<span style="color:#8e44ad">&#9711;</span> 90% region';
  return d; }};
legend.addTo(map);
</script></body></html>
"""


# ---------------------------------------------------------------------------------------------
# The one writer of prediction files (``terraloc predict -o``) and what ``--resume`` reads back.
#
# File names come from the file system and may hold bytes that are not UTF-8 (Python keeps them
# as lone surrogates, PEP 383). CSV files carry those exact bytes (encoded with
# ``surrogateescape``, read back the same way); JSON Lines carry ``\udcXX`` escapes, which are
# valid JSON and decode to the same string. Each image's record (its k CSV rows, or one JSON
# line) is appended with a single write; a write that fails part-way is cut back, so the file
# only ever ends with whole records.


def encode_text(text: str) -> bytes:
    """UTF-8 bytes of ``text``; lone surrogates from undecodable file names become their original bytes."""
    return text.encode("utf-8", "surrogateescape")


def decode_text(data: bytes) -> str:
    """Inverse of :func:`encode_text`."""
    return data.decode("utf-8", "surrogateescape")


def json_line(obj: Any) -> str:
    """One JSON Lines record; lone surrogates written as ``\\udcXX`` escapes (valid JSON, lossless)."""
    return escape_surrogates(json.dumps(obj, ensure_ascii=False)) + "\n"


def record_bytes(pred: ImagePrediction, fmt: str) -> bytes:
    """The bytes of one image's record in ``fmt`` (``csv``: its rows; ``json``: one line)."""
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(csv_rows(pred))
        return encode_text(buf.getvalue())
    return encode_text(json_line(pred.to_json()))


def _csv_header() -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(CSV_COLUMNS)
    return buf.getvalue().encode()


def complete_records(data: bytes, fmt: str, top_k: int) -> tuple[list[tuple[str, bytes]], int]:
    """Split the bytes of a prediction file into whole, complete image records.

    A record is complete when it is an image's ``top_k`` candidate rows ranked 1..k (CSV) or a
    JSON object with ``top_k`` candidates (JSON Lines), and has no error: failed images are done
    again on resume. A record cut short (a killed run, a full disk) is not complete; nor is
    anything after the last newline.

    Returns:
        ``(records, dropped)``: ``(image, record bytes)`` in file order (first occurrence of each
        image only), and how many records were dropped as incomplete, failed or repeated.
    """
    end = data.rfind(b"\n") + 1
    whole, tail = data[:end], data[end:]
    dropped = 1 if tail.strip() else 0
    records: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def keep(image: str, raw: bytes, ok: bool) -> None:
        nonlocal dropped
        if ok and image not in seen:
            seen.add(image)
            records.append((image, raw))
        else:
            dropped += 1

    if fmt == "csv":
        text = decode_text(whole)
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows:
            return [], dropped
        header = rows[0]
        if header != CSV_COLUMNS:
            return [], dropped + len(rows) - 1
        col = {c: i for i, c in enumerate(header)}
        groups: list[tuple[str, list[list[str]]]] = []
        for row in rows[1:]:
            if len(row) != len(header):
                groups.append(("", [row]))  # malformed: its own group, dropped
                continue
            image = row[col["image"]]
            if groups and groups[-1][0] == image and row[col["rank"]] not in ("", "1"):
                groups[-1][1].append(row)
            else:
                groups.append((image, [row]))
        for image, grp in groups:
            ranks = [r[col["rank"]] for r in grp]
            ok = (
                bool(image)
                and len(grp) == top_k
                and ranks == [str(i) for i in range(1, top_k + 1)]
                and not any(r[col["error"]] for r in grp)
            ) or (bool(image) and len(grp) == 1 and grp[0][col["abstained"]] == "1")  # an abstention is done
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(grp)
            keep(image, encode_text(buf.getvalue()), ok)
        return records, dropped
    for line in whole.splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            obj = json.loads(decode_text(line))
        except ValueError:
            dropped += 1
            continue
        ok = (
            isinstance(obj, dict)
            and isinstance(obj.get("image"), str)
            and not obj.get("error")
            and isinstance(obj.get("candidates"), list)
            and (len(obj["candidates"]) == top_k or obj.get("abstained") is True)
        )
        keep(str(obj.get("image")) if isinstance(obj, dict) else "", line, ok)
    return records, dropped


class PredictionFile:
    """Append-only prediction output (``csv`` or ``json`` Lines) with verified ``--resume``.

    Args:
        path: the output file, or ``None`` for standard output.
        fmt: ``csv`` or ``json``.
        top_k: candidates per image (a complete record has exactly this many).
        resume: keep the complete records of an existing ``path`` (rewritten atomically without
            the incomplete, failed or repeated ones) and append after them.

    Attributes:
        done: images whose complete record was kept from an earlier run.
        dropped: records of the earlier run that were dropped and will be redone.
        written: records appended by this run.

    Raises:
        OutputError: (from the constructor and :meth:`write`) the file cannot be written: disk
            full, read-only, no permission. The message says what the file still holds.
    """

    def __init__(self, path: Path | None, fmt: str, top_k: int, resume: bool = False) -> None:
        if fmt not in ("csv", "json"):
            raise ValueError(f"fmt must be csv or json, got {fmt!r}")
        self.path = path
        self.fmt = fmt
        self.done: set[str] = set()
        self.dropped = 0
        self.written = 0
        self._fd: int | None = None
        self._stream: Any = None
        self._size = 0
        self._kept = b""
        self._resumed = resume and path is not None and path.exists()
        if self._resumed:
            assert path is not None
            records, self.dropped = complete_records(path.read_bytes(), fmt, top_k)
            self.done = {image for image, _ in records}
            self._kept = b"".join(raw for _, raw in records)

    def open(self) -> PredictionFile:
        """Start the output: the header (CSV), after the kept records when resuming (nothing is
        written before this, so a run that fails to start leaves an earlier file alone)."""
        from terraloc.io import atomic_write_bytes
        from terraloc.output_errors import reported_write_errors

        header = _csv_header() if self.fmt == "csv" else b""
        if self.path is None:
            self._stream = getattr(sys.stdout, "buffer", None)
            if header:
                self._out(header)
            return self
        with reported_write_errors(self.path, kept=self._kept_message(len(self.done), resumed=True)):
            if not self._resumed:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, header + self._kept)  # whole records only, each image once
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(header) + len(self._kept)
        self._kept = b""
        return self

    def _kept_message(self, n: int, resumed: bool = False) -> str:
        if resumed:
            return f"the file was left as it was ({n} complete image records; run again with --resume)"
        return (
            f"the file holds {n} complete image records (no partial record); "
            "free space or fix permissions and run again with --resume to finish"
        )

    def _out(self, data: bytes) -> None:
        sys.stdout.flush()
        if self._stream is not None:
            self._stream.write(data)
            self._stream.flush()
        else:  # a text-only stdout (tests): surrogates back to text
            sys.stdout.write(decode_text(data))
            sys.stdout.flush()

    def write(self, pred: ImagePrediction) -> None:
        """Append one image's whole record (or nothing, if the write fails)."""
        data = record_bytes(pred, self.fmt)
        if self._fd is None:
            if self.path is not None:
                raise RuntimeError("PredictionFile.write() before open()")
            self._out(data)
            self.written += 1
            return
        from terraloc.output_errors import output_error

        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # cut a partial record back off
            raise output_error(exc, self.path, self._kept_message(len(self.done) + self.written)) from None
        self._size += len(data)
        self.written += 1

    def close(self) -> None:
        """Flush to disk and close."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            except OSError as exc:
                from terraloc.output_errors import output_error

                raise output_error(exc, self.path, self._kept_message(len(self.done) + self.written)) from None
            finally:
                os.close(fd)

    def __enter__(self) -> PredictionFile:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
