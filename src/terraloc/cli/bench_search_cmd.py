"""``terraloc bench search``: gallery search backends on 100K / 1M / 5M GPS galleries."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from terraloc.cli.app import bench_app, err_console, out_console


@bench_app.command("search")
def bench_search(
    sizes: Annotated[str, typer.Option(help="Gallery sizes, comma-separated.")] = "100000,1000000,5000000",
    noise: Annotated[str, typer.Option(help="Query noise sigmas, comma-separated.")] = "0,0.1,0.2,0.25",
    backends: Annotated[
        str,
        typer.Option(
            help="flat, hierarchical and FAISS factory strings, separated by ';' (or ','), "
            "with optional @params, e.g. 'flat;hierarchical@beam=8;IVF1024,Flat@nprobe=16'."
        ),
    ] = "flat;hierarchical;hierarchical@top=800,beam=8,leaf_beam=6;HNSW32;IVF1024,Flat",
    queries: Annotated[int | None, typer.Option(help="Use only the first N Im2GPS3k locations.")] = None,
    single: Annotated[int, typer.Option(help="Queries timed one at a time for the single latency.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help='Print one JSON object {"runs": [...]}.')] = False,
) -> None:
    """Comparisons, latency, build time, memory and accuracy of each search backend."""
    from terraloc.bench.search import _size as size_cast
    from terraloc.bench.search import parse_backends, parse_list, run_benchmark, to_json
    from terraloc.errors import InputError

    size_list = parse_list(sizes, "--sizes", size_cast)
    noise_list = parse_list(noise, "--noise", float)
    backend_list = parse_backends(backends)
    if queries is not None and queries < 1:
        raise InputError("must be at least 1", field="--queries")
    if single < 1:
        raise InputError("must be at least 1", field="--single")
    from terraloc.progress import callback

    runs = run_benchmark(
        size_list,
        noise_list,
        backend_list,
        n_queries=queries,
        n_single=single,
        log=lambda m: err_console.print(m, markup=False),
        progress=callback("embedding the benchmark gallery (first use only)"),
    )
    if as_json:
        typer.echo(to_json(runs))
        return
    out_console().print(render_table(runs))


def render_table(runs: list[dict[str, Any]]) -> Any:
    """A Rich table of benchmark runs, with each run's accuracy change against flat search."""
    from rich.table import Table

    from terraloc.evaluate.thresholds import THRESHOLD_KEYS

    flat = {(r["gallery_size"], r["noise"]): r for r in runs if r["backend"] == "flat"}
    table = Table(title="Gallery search (Im2GPS3k locations as queries, top-1)")
    for col in ("gallery", "backend", "noise", "cmp/query", "fewer", "ms/q batched", "ms/q single", "build s", "MB"):
        if col == "backend":  # a long option list wraps rather than losing its tail to an ellipsis
            table.add_column(col, justify="left", overflow="fold", min_width=24)
        else:
            table.add_column(col, justify="right")
    for t in THRESHOLD_KEYS:
        table.add_column(f"{t} km", justify="right")
    table.add_column("worst Δ vs flat", justify="right")
    for r in runs:
        f = flat.get((r["gallery_size"], r["noise"]))
        fewer = f"{f['comparisons_per_query'] / r['comparisons_per_query']:.0f}x" if f else "–"
        delta = min(r["accuracy"][t] - f["accuracy"][t] for t in r["accuracy"]) if f else None
        table.add_row(
            f"{r['gallery_size']:,}",
            _label(r),
            f"{r['noise']:g}",
            f"{r['comparisons_per_query']:,.0f}",
            fewer,
            f"{r['ms_per_query_batched']:.3f}",
            f"{r['ms_per_query_single']:.3f}",
            f"{r['build_s']:.1f}",
            f"{r['memory_mb']:.0f}",
            *[f"{r['accuracy'][t]:.1f}" for t in THRESHOLD_KEYS],
            "–" if delta is None else f"{delta:+.1f}",
        )
    return table


def _label(run: dict[str, Any]) -> str:
    """Backend name with its non-default options (``IVF1024,Flat@nprobe=16``, ``hierarchical@top=800``)."""
    opts = run.get("options") or {}
    if "params" in opts:
        return f"{run['backend']}@{opts['params']}" if opts["params"] else run["backend"]
    extra = ",".join(f"{k}={v}" for k, v in opts.items())
    return f"{run['backend']}@{extra}" if extra else run["backend"]
