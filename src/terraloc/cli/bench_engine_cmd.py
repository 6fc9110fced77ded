"""``terraloc bench engine``: photos/s per engine and worker count; driver memory by input size."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from terraloc.cli.app import bench_app, err_console, out_console
from terraloc.errors import InputError


def _ints(text: str, name: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated integers, got '{text}'", field=name) from None
    if not vals or min(vals) < 1:
        raise InputError(f"expected positive integers, got '{text}'", field=name)
    return vals


@bench_app.command("engine")
def bench_engine(
    photos: Annotated[int, typer.Option("--photos", help="Photos per run (shared photos listed repeatedly).")] = 600,
    engines: Annotated[str, typer.Option("--engines", help="Engines, comma-separated: local,ray.")] = "local,ray",
    workers: Annotated[str, typer.Option("--workers", help="Worker counts, comma-separated.")] = "1,2",
    tasks: Annotated[str, typer.Option("--tasks", help="embed (EfficientNet-Lite0), predict (refdb head).")] = (
        "embed,predict"
    ),
    driver_memory: Annotated[
        str | None,
        typer.Option(
            "--driver-memory", help="Also measure the Ray driver's peak RSS at these photo counts, e.g. 2000,20000."
        ),
    ] = None,
    driver_memory_input: Annotated[
        str,
        typer.Option("--driver-memory-input", help="Photos for --driver-memory given as: manifest (CSV) or folder."),
    ] = "manifest",
    repeat: Annotated[
        int,
        typer.Option(
            "--repeat", help="Runs of every configuration, interleaved; the table shows their medians.", min=1
        ),
    ] = 1,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to join.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Photos/s of embedding and prediction per engine and worker count (the machine may be shared)."""
    from terraloc.bench.engine import (
        DRIVER_MEMORY_INPUTS,
        machine,
        medians,
        ratios,
        run_driver_memory,
        run_throughput,
    )
    from terraloc.engine import ENGINE_NAMES

    if photos < 1:
        raise InputError(f"must be at least 1, got {photos}", field="photos")
    eng = [e.strip() for e in engines.split(",") if e.strip()]
    for e in eng:
        if e not in ENGINE_NAMES:
            raise InputError(f"unknown engine '{e}'; choose from {', '.join(ENGINE_NAMES)}", field="engines")
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    for task in task_list:
        if task not in ("embed", "predict"):
            raise InputError(f"unknown task '{task}'; choose embed, predict", field="tasks")
    wl = _ints(workers, "workers")
    mem_sizes = _ints(driver_memory, "driver-memory") if driver_memory else []
    if driver_memory_input not in DRIVER_MEMORY_INPUTS:
        raise InputError(f"choose manifest or folder, got '{driver_memory_input}'", field="driver-memory-input")
    before = machine()
    say = None if as_json else (lambda m: err_console.print(m, markup=False))
    runs = run_throughput(photos, eng, wl, task_list, ray_address=ray_address, log=say, repeat=repeat)
    med = medians(runs)
    mem = run_driver_memory(mem_sizes, ray_address, inputs=driver_memory_input) if mem_sizes else []
    res: dict[str, Any] = {"machine_before": before, "machine_after": machine(), "runs": runs, "medians": med}
    res["ratios"] = ratios(med)  # of the medians (= of the runs when --repeat 1)
    if mem:
        res["driver_memory"] = mem
    if as_json:
        typer.echo(json.dumps(res))
        return
    each = f", median of {repeat} runs" if repeat > 1 else ""
    t = Table(
        title=f"Engine throughput, {photos} photos{each} ({before['cpus']} CPUs, load {before['loadavg_1_5_15']})"
    )
    cols = ["task", "engine", "workers", "photos/s", "seconds", "start-up s", "steady photos/s", "failed"]
    for c in cols + (["photos/s of each run"] if repeat > 1 else []):
        t.add_column(c, justify="left" if c in ("task", "engine") else "right")
    for r in med:
        t.add_row(r["task"], r["engine"], str(r["workers"]), f"{r['photos_per_s']:.1f}", f"{r['seconds']:.1f}",
                  f"{r['startup_s']:.1f}", f"{r['steady_photos_per_s']:.1f}", str(r["failed"]),
                  *([" ".join(f"{v:.1f}" for v in r["photos_per_s_runs"])] if repeat > 1 else []))  # fmt: skip
    out_console().print(t)
    for name, d in res["ratios"].items():
        out_console().print(f"{name}: " + ", ".join(f"{k} = {v}" for k, v in d.items()))
    for m in mem:
        out_console().print(
            f"driver peak RSS at {m['photos']} photos ({m['inputs']}): {m['driver_peak_rss_mb']} MiB "
            f"({m['photos_per_s']} photos/s)"
        )
