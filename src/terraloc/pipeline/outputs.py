"""Writers for prediction results: CSV (what ``terraloc eval`` reads), JSON Lines, GeoJSON, an
offline HTML map (vendored Leaflet + bundled country outlines, no network), and a Rich table."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from terraloc.pipeline.types import ImagePrediction

CSV_COLUMNS = [
    "image",
    "rank",
    "lat",
    "lon",
    "probability",
    "city",
    "admin1",
    "country",
    "country_code",
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


def done_images(path: Path, fmt: str) -> set[str]:
    """Images already present (successfully) in an output file, for ``--resume``."""
    done: set[str] = set()
    if not path.exists() or path.stat().st_size == 0:
        return done
    with open(path, encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            for row in csv.DictReader(fh):
                if row.get("image") and not row.get("error"):
                    done.add(row["image"])
        else:
            for line in fh:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue  # a half-written last line from an interrupted run
                if isinstance(obj, dict) and obj.get("image") and not obj.get("error"):
                    done.add(str(obj["image"]))
    return done


def rewrite_without(path: Path, fmt: str, keep: set[str]) -> None:
    """Drop rows of images not in ``keep`` (failed or half-written) before resuming, atomically."""
    from terraloc.io import atomic_write

    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    out = io.StringIO()
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        w = csv.writer(out, lineterminator="\n")
        if rows:
            w.writerow(rows[0])
            idx = rows[0].index("image") if "image" in rows[0] else 0
            ncol = len(rows[0])
            w.writerows(r for r in rows[1:] if len(r) == ncol and r[idx] in keep)
    else:
        for line in text.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and str(obj.get("image")) in keep:
                out.write(line + "\n")
    with atomic_write(path, "w") as fh:
        fh.write(out.getvalue())


def geojson(preds: Iterable[ImagePrediction]) -> dict[str, Any]:
    """A FeatureCollection with one Point per candidate (``[lon, lat]``, per GeoJSON), each with the
    image's ``confidence``; per image also its 90% confidence region (a MultiPolygon of discs,
    ``"kind": "confidence_region"``); an abstained image is one Feature with a null geometry."""
    from terraloc.confidence.region import confidence_region

    feats: list[dict[str, Any]] = []
    for p in preds:
        if p.abstained:
            props = {"image": p.image, "abstained": True, "confidence": p.confidence}
            feats.append({"type": "Feature", "geometry": None, "properties": props})
            continue
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
    return {"type": "FeatureCollection", "features": feats}


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
    data = data.replace("</", "<\\/")
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
