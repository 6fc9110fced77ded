"""Run a job: plan partitions, skip finished ones, run the rest on an engine, write the manifest.

``run_job(spec, items, out, engine)`` is what ``terraloc predict/embed/db build`` call. The driver
holds the inputs (in memory, or on disk for a streamed manifest: :mod:`terraloc.engine.stream`),
reads a partition's ids and paths when it hands it out, and receives its numbers; rows go from the workers
straight to part files. Re-running the same call after a crash continues where it stopped; a
finished job (manifest present) is not recomputed.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq

from terraloc.engine.inputs import JobInputs
from terraloc.engine.parts import (
    ERRORS_DIR,
    PARTS_DIR,
    errors_path,
    is_done,
    part_name,
    read_model_meta,
    remove_stale_temporaries,
    rows_path,
)
from terraloc.engine.plan import check_or_write_job, default_part_size, job_record, partitions
from terraloc.engine.progress import ProgressCallback, ProgressTracker, RunSummary, peak_rss_mb
from terraloc.engine.workers import BatchCallback, PartCallback, PartInput, WorkerSpec
from terraloc.errors import InputError
from terraloc.io import atomic_write, atomic_write_text

MANIFEST = "manifest.json"
ERRORS_CSV = "errors.csv"
FORMATS = {"embed": "terraloc-shards", "predict": "terraloc-predictions"}


class Engine(Protocol):
    """Runs partitions with a worker spec (see :class:`LocalEngine`, :class:`RayEngine`)."""

    name: str
    workers: int

    def run(
        self, spec: WorkerSpec, out: str, parts: Iterable[PartInput], on_part: PartCallback, on_batch: BatchCallback
    ) -> None: ...


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished job folder, or ``None`` when the job is not finished."""
    p = Path(out) / MANIFEST
    if not p.exists():
        return None
    try:
        return dict(json.loads(p.read_text()))
    except ValueError as exc:
        raise InputError(f"corrupt manifest: {exc}", path=p) from None


def run_job(
    spec: WorkerSpec,
    items: JobInputs,
    out: str | Path,
    engine: Engine,
    *,
    part_size: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> RunSummary:
    """Process ``items`` with ``spec`` on ``engine`` into the job folder ``out`` (resumable).

    Returns:
        A :class:`RunSummary` (done / skipped / failed photos, time, photos/s, driver memory).

    Raises:
        InputError: ``out`` holds another job, or there are no inputs.
    """
    t0 = time.perf_counter()
    out_given = out
    out = Path(out).resolve()  # workers may run in another folder (or on another node)
    n = len(items)
    if n == 0:
        extra = f" ({len(items.skipped)} unusable inputs)" if items.skipped else ""
        raise InputError("no photos to process" + extra)
    size = part_size or default_part_size(n)
    job = job_record(spec.kind, spec.describe(), items, size)
    plan = partitions(n, size)
    finished = read_manifest(out)
    check_or_write_job(out, job)
    if finished is None:
        remove_stale_temporaries(out)
    done_parts = {p.pid for p in plan if is_done(out, p.pid)}
    skipped = sum(len(p) for p in plan if p.pid in done_parts)
    tracker = ProgressTracker(n, skipped, on_progress)
    written = 0

    def inputs() -> Iterator[PartInput]:
        for p in plan:
            if p.pid in done_parts:
                continue
            ids, given, coords = items.part(p.lo, p.hi)  # read when handed out (inputs may be on disk)
            paths = [os.path.abspath(x) for x in given]
            yield PartInput(p.pid, p.lo, ids, paths, coords, given)

    def on_part(stats: dict[str, Any]) -> None:
        nonlocal written
        written += int(bool(stats.get("written")))
        tracker.add(0, max(0, int(stats.get("failed", 0))))

    startup = 0.0
    if len(done_parts) < len(plan):
        engine.run(spec, str(out), inputs(), on_part, lambda k: tracker.add(int(k)))
        startup = float(getattr(engine, "startup_s", 0.0))
    manifest = finished if finished is not None and len(done_parts) == len(plan) else None
    if manifest is None:
        manifest = _finish(out, spec.kind, job, plan, items, engine)
    seconds = time.perf_counter() - t0
    processed = tracker.processed
    failed = int(manifest["failed"])
    return RunSummary(
        out=str(out_given),
        engine=engine.name,
        workers=engine.workers,
        total=n,
        done=max(0, processed - tracker.failed),
        skipped=skipped,
        failed=failed,
        ignored=int(manifest.get("ignored", 0)),
        rows=int(manifest["rows"]),
        parts=len(plan),
        parts_written=written,
        seconds=seconds,
        photos_per_s=processed / seconds if seconds > 0 else 0.0,
        driver_peak_rss_mb=peak_rss_mb(),
        startup_s=startup,
        steady_photos_per_s=processed / (seconds - startup) if seconds > startup and processed else 0.0,
    )


def _finish(out: Path, kind: str, job: dict[str, Any], plan: list[Any], items: JobInputs, engine: Engine) -> dict:
    """All parts are written: check they agree, write ``errors.csv`` and then the manifest."""
    parts: list[dict[str, Any]] = []
    model: dict[str, Any] | None = None
    dim = None
    for p in plan:
        rp, ep = rows_path(out, p.pid), errors_path(out, p.pid)
        if not rp.exists() or not ep.exists():
            raise InputError(f"partition {p.pid} has no part file after the run", path=out)
        meta = read_model_meta(rp)
        if model is None:
            model = meta
        elif meta != model:
            raise InputError(
                f"{rp.name} was written by another model ({meta}) than the first part ({model}); "
                "delete the folder and run again",
                path=out,
            )
        rows = pq.read_metadata(rp).num_rows
        errs = pq.read_metadata(ep).num_rows
        if kind == "embed" and dim is None:
            t = pq.read_schema(rp).field("embedding").type
            dim = int(t.list_size)
        parts.append({"pid": p.pid, "file": f"{PARTS_DIR}/{part_name(p.pid)}", "rows": rows, "errors": errs})
    from terraloc.engine.inputs import is_ignored

    ignored = sum(1 for _, reason in items.skipped if is_ignored(reason))
    failed = sum(p["errors"] for p in parts) + len(items.skipped) - ignored
    with atomic_write(out / ERRORS_CSV, "w", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["index", "id", "path", "reason"])
        for item, reason in items.skipped:
            w.writerow(["", "", item, reason])
        for p in plan:
            t = pq.read_table(errors_path(out, p.pid))
            for r in t.to_pylist():
                w.writerow([r["index"], r["id"], r["path"], r["reason"]])
    manifest: dict[str, Any] = {
        "format": FORMATS.get(kind, f"terraloc-{kind}"),
        "version": 1,
        "kind": kind,
        "job": job,
        "model": model or {},
        "photos": job["n"],
        "rows": int(sum(p["rows"] for p in parts)),
        "failed": failed,
        "ignored": ignored,
        "errors": ERRORS_CSV,
        "error_parts": ERRORS_DIR,
        "parts": parts,
        "engine": engine.name,
        "complete": True,
    }
    if kind == "embed":
        bb = (model or {}).get("backbone", {})
        # readable as a training shard folder (terraloc.train.shards.ShardSet)
        manifest.update(
            {
                "dim": dim,
                "shards": [{"file": p["file"], "rows": p["rows"]} for p in parts if p["rows"]],
                "embedding_model": bb.get("id", ""),
                "weights_hash": bb.get("hash", ""),
                "synthetic": False,
                "coords": items.has_coords,
            }
        )
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest
