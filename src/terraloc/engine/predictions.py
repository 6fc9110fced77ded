"""Read a prediction job's parts back as :class:`ImagePrediction` objects, one partition at a time,
and write them as one CSV / JSON Lines / GeoJSON file (what ``terraloc eval`` reads)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from terraloc.engine.job import read_manifest
from terraloc.engine.parts import errors_path, read_model_meta, rows_path
from terraloc.errors import InputError
from terraloc.io import atomic_write
from terraloc.pipeline.types import ImagePrediction, Prediction


def _manifest(out: str | Path) -> dict[str, Any]:
    """The manifest of a finished prediction job (refused in one line otherwise)."""
    manifest = read_manifest(out)
    if manifest is None or manifest.get("kind") != "predict":
        raise InputError("not a finished prediction job (no manifest.json)", path=out)
    return manifest


def iter_predictions(out: str | Path) -> Iterator[ImagePrediction]:
    """Every photo of a finished prediction job, in input order (failed photos carry ``error``)."""
    out = Path(out)
    manifest = _manifest(out)
    import csv

    from terraloc.engine.inputs import is_ignored

    with open(out / manifest["errors"], encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            if not r["index"] and not is_ignored(r["reason"]):  # inputs that named no usable photo come first
                yield ImagePrediction(r["path"], [], r["reason"], {})
    for part in manifest["parts"]:
        pid = int(part["pid"])
        model = read_model_meta(rows_path(out, pid))
        rows = pq.read_table(rows_path(out, pid)).to_pylist()
        errs = pq.read_table(errors_path(out, pid)).to_pylist()
        by_index: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            by_index.setdefault(int(r["index"]), []).append(r)
        failed = {int(e["index"]): e for e in errs}
        for i in sorted(set(by_index) | set(failed)):
            if i in failed:
                e = failed[i]
                yield ImagePrediction(e["path"], [], e["reason"], model)
                continue
            yield _photo(by_index[i], model)


def count_abstained(out: str | Path) -> int:
    """Photos of a finished prediction job that abstained, read from the ``abstained`` column only
    (an abstained photo is one row)."""
    import pyarrow.compute as pc

    manifest = _manifest(out)
    n = 0
    for part in manifest["parts"]:
        path = rows_path(out, int(part["pid"]))
        if "abstained" in pq.read_schema(path).names:  # parts written before it existed: none
            n += int(pc.sum(pq.read_table(path, columns=["abstained"]).column(0)).as_py() or 0)
    return n


def _photo(rows: list[dict[str, Any]], model: dict[str, Any]) -> ImagePrediction:
    """One photo's rows (one per candidate, or one abstention row) → its :class:`ImagePrediction`."""
    first = rows[0]
    conf, feats, region = first.get("confidence"), first.get("features"), first.get("region")
    abstained = bool(first.get("abstained"))
    preds = [
        Prediction(
            int(r["rank"]),
            float(r["lat"]),
            float(r["lon"]),
            float(r["probability"]),
            r["city"] or "",
            r["admin1"] or "",
            r["country"] or "",
            r["country_code"] or "",
        )
        for r in sorted(rows, key=lambda r: r["rank"])
        if not abstained
    ]
    return ImagePrediction(
        first["image"],
        preds,
        None,
        model,
        first["width"],
        first["height"],
        # parts written before these columns existed read as "no calibrator"
        confidence=dict(conf) if conf is not None else None,
        abstained=abstained,
        region=json.loads(region) if region else None,
        features=dict(feats) if feats is not None else None,
    )


def write_predictions(out: str | Path, dest: str | Path, fmt: str) -> int:
    """Write a finished job's predictions to ``dest`` (``csv``, ``json`` = JSON Lines, ``geojson``),
    atomically and streaming (one partition in memory at a time). Returns the photos written."""
    from terraloc.pipeline.outputs import StreamWriter, escape_surrogates, geojson_features

    n = 0
    with atomic_write(dest, "w", encoding="utf-8") as fh:
        if fmt in ("csv", "json", "jsonl"):
            w = StreamWriter(fh, "csv" if fmt == "csv" else "json")  # type: ignore[arg-type]
            for p in iter_predictions(out):
                w.write(p)
                n += 1
        elif fmt == "geojson":  # the features of pipeline.outputs.geojson, one image at a time
            fh.write('{"type": "FeatureCollection", "features": [')
            first = True
            for p in iter_predictions(out):
                n += 1
                for feat in geojson_features(p):
                    fh.write(("" if first else ",") + "\n" + escape_surrogates(json.dumps(feat, ensure_ascii=False)))
                    first = False
            fh.write("\n]}\n")
        else:
            raise InputError(f"unknown format '{fmt}'; choose csv, json or geojson", field="format")
    return n
