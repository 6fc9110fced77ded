"""Engine benchmark: photos/s of embedding (EfficientNet-Lite0) and of prediction (reference-database
head) per engine and worker count, and the driver's peak memory at two input sizes.

Inputs are the shared photos (300 Im2GPS3k + 71 OSV-5M) listed repeatedly in a manifest with
distinct ids, so ``N`` can exceed 371. Each configuration runs a fresh job folder from the start:
the time includes starting the workers and loading the model in each (Ray actors), not starting
the Ray cluster (joined or started once before the runs). The reference database for the
prediction runs is built once, untimed, from the 71 OSV-5M photos.

Driver memory: each size runs ``terraloc embed`` (``--engine ray`` by default) in a fresh process
on a manifest or a folder of that many photos and reads the peak resident memory it reports for
itself (``VmHWM``; the Ray workers are other processes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from terraloc.errors import InputError, MissingResourceError

Log = Callable[[str], None]

#: How ``run_driver_memory`` gives the photos: a CSV manifest, or a folder of links.
DRIVER_MEMORY_INPUTS = ("manifest", "folder")


def shared_photos() -> list[Path]:
    """The shared Im2GPS3k (300) and OSV-5M (71) photos, sorted."""
    from terraloc.config import shared_dir

    root = Path(shared_dir()) / "data" / "photos"
    photos = sorted((root / "im2gps3k_dev").glob("*.jpg")) + sorted((root / "osv5m").glob("*.jpg"))
    if not photos:
        raise MissingResourceError(f"{root}: no shared photos (set TERRALOC_SHARED)")
    return photos


def replicated_manifest(photos: Sequence[Path], n: int, dest: Path) -> Path:
    """A CSV manifest ``id,path`` listing ``photos`` cyclically until ``n`` rows (ids ``p000000``...)."""
    import csv

    with open(dest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path"])
        for i in range(n):
            w.writerow([f"p{i:07d}", str(photos[i % len(photos)])])
    return dest


def replicated_folder(photos: Sequence[Path], n: int, dest: Path) -> Path:
    """A folder of ``n`` symbolic links to ``photos`` listed cyclically (``p0000000.jpg``...), 1,000 a
    sub-folder (``d0000/``...)."""
    for i in range(n):
        sub = dest / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"p{i:07d}{photos[i % len(photos)].suffix}").symlink_to(photos[i % len(photos)])
    return dest


def _refdb(work: Path) -> Path:
    from terraloc.config import shared_dir
    from terraloc.engine import make_engine
    from terraloc.engine.refdb_build import build_refdb, geotagged_items

    db = work / "refdb_osv5m_effnet"
    if not (db / "manifest.json").exists():
        items = geotagged_items(Path(shared_dir()) / "data/photos/osv5m/osv5m_photos.csv")
        build_refdb(items, "efficientnet-lite0", db, make_engine("local", workers=2))
    return db


def run_throughput(
    n: int,
    engines: Sequence[str],
    workers: Sequence[int],
    tasks: Sequence[str] = ("embed", "predict"),
    ray_address: str | None = None,
    batch_size: int = 16,
    log: Log | None = None,
    repeat: int = 1,
) -> list[dict[str, Any]]:
    """photos/s for every task × engine × worker count (one fresh job each), ``repeat`` times: each
    repetition runs every configuration once, so a slow spell of a shared machine falls on all of
    them rather than on one (:func:`medians` summarises)."""
    from terraloc.engine import EmbedSpec, PredictSpec, make_engine, read_work_items, run_job

    work = Path(tempfile.mkdtemp(prefix="terraloc-bench-engine-"))
    runs: list[dict[str, Any]] = []
    try:
        manifest = replicated_manifest(shared_photos(), n, work / "photos.csv")
        items = read_work_items(manifest, id_col="id")
        db = _refdb(work) if "predict" in tasks else None
        if "ray" in engines:
            from terraloc.engine.ray_engine import connect

            connect(ray_address, max(workers))
        configs = [(t, e, w) for t in tasks for e in engines for w in workers]
        for rep in range(repeat):
            for task, eng_name, w in configs:
                eng = make_engine(eng_name, workers=w, ray_address=ray_address)
                decode = w if eng_name == "local" else 1
                spec: Any
                if task == "embed":
                    spec = EmbedSpec("efficientnet-lite0", batch_size=batch_size, decode_threads=decode)
                else:
                    cfg = {"backbone": "efficientnet-lite0", "head": "refdb", "refdb": str(db)}
                    spec = PredictSpec({**cfg, "batch_size": batch_size, "workers": decode}, top_k=5)
                out = work / f"{task}-{eng_name}-{w}"
                s = run_job(spec, items, out, eng, part_size=max(16, n // (8 * max(workers))))
                shutil.rmtree(out, ignore_errors=True)
                run = {
                    "task": task,
                    "engine": eng_name,
                    "workers": w,
                    "photos": n,
                    "seconds": round(s.seconds, 3),
                    "photos_per_s": round(s.photos_per_s, 2),
                    "startup_s": round(s.startup_s, 2),
                    "steady_photos_per_s": round(s.steady_photos_per_s, 2),
                    "failed": s.failed,
                    "repeat": rep,
                }
                runs.append(run)
                if log:
                    log(f"{task} {eng_name} x{w}: {run['photos_per_s']} photos/s ({run['seconds']} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return runs


def run_driver_memory(
    sizes: Sequence[int],
    ray_address: str | None,
    workers: int = 2,
    backbone: str = "efficientnet-lite0",
    inputs: str = "manifest",
    engine: str = "ray",
) -> list[dict[str, Any]]:
    """Peak driver RSS of ``terraloc embed --engine ENGINE`` at each input size (fresh process each),
    the photos given as a CSV manifest (``inputs="manifest"``) or a folder (``"folder"``)."""
    if inputs not in DRIVER_MEMORY_INPUTS:
        raise InputError(f"choose {' or '.join(DRIVER_MEMORY_INPUTS)}, got '{inputs}'", field="driver-memory-input")
    work = Path(tempfile.mkdtemp(prefix="terraloc-bench-mem-"))
    out: list[dict[str, Any]] = []
    try:
        photos = shared_photos()
        for n in sizes:
            if inputs == "folder":
                given = [str(replicated_folder(photos, n, work / f"photos-{n}"))]
            else:
                given = ["--photos", str(replicated_manifest(photos, n, work / f"photos-{n}.csv")), "--id-col", "id"]
            cmd = [sys.executable, "-m", "terraloc", "embed", *given,
                   "--out", str(work / f"emb-{n}"), "--backbone", backbone, "--engine", engine,
                   "--workers", str(workers), "--json", "--no-progress", "--no-coords"]  # fmt: skip
            if ray_address and engine == "ray":
                cmd += ["--ray-address", ray_address]
            r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
            if r.returncode != 0:
                raise InputError(f"embed run for {n} photos failed: {r.stderr.strip()[-500:]}")
            s = json.loads(r.stdout.strip().splitlines()[-1])
            out.append({"photos": n, "inputs": inputs, "engine": engine,
                        "driver_peak_rss_mb": round(s["driver_peak_rss_mb"], 1),
                        "photos_per_s": round(s["photos_per_s"], 2), "seconds": round(s["seconds"], 1)})  # fmt: skip
            shutil.rmtree(work / f"emb-{n}", ignore_errors=True)
            shutil.rmtree(work / f"photos-{n}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def machine() -> dict[str, Any]:
    """CPU count and load averages when the benchmark ran (the machine may be shared)."""
    return {"cpus": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per task × engine × workers: the median of its repeated runs' figures, with the
    photos/s of every run (``photos_per_s_runs``) to show the spread."""
    import statistics

    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["engine"], r["workers"]), []).append(r)
    out = []
    for (task, eng, w), rs in groups.items():
        row: dict[str, Any] = {"task": task, "engine": eng, "workers": w, "photos": rs[0]["photos"], "runs": len(rs)}
        for k in ("seconds", "photos_per_s", "startup_s", "steady_photos_per_s"):
            row[k] = round(statistics.median(r[k] for r in rs), 3 if k == "seconds" else 2)
        row["failed"] = max(r["failed"] for r in rs)
        row["photos_per_s_runs"] = [r["photos_per_s"] for r in rs]
        out.append(row)
    return out


def ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task: Ray at 1 worker / local at 1 worker, and Ray 2 workers / Ray 1 worker — of the whole
    runs' photos/s, and of the steady photos/s (after the workers have loaded the model)."""
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in runs}):
        d: dict[str, float] = {}
        for key, suffix in (("photos_per_s", ""), ("steady_photos_per_s", "_steady")):
            rate = {(r["engine"], r["workers"]): r[key] for r in runs if r["task"] == task}
            if ("ray", 1) in rate and ("local", 1) in rate and rate[("local", 1)]:
                d["ray1_over_local1" + suffix] = round(rate[("ray", 1)] / rate[("local", 1)], 3)
            if ("ray", 2) in rate and ("ray", 1) in rate and rate[("ray", 1)]:
                d["ray2_over_ray1" + suffix] = round(rate[("ray", 2)] / rate[("ray", 1)], 3)
        out[task] = d
    return out
