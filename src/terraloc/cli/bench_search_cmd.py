"""``terraloc bench search``: gallery search backends on 100K / 1M / 5M GPS galleries."""

from __future__ import annotations

from typing import Annotated

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
    from terraloc.bench.search import parse_backends, parse_list, render_table, run_benchmark, to_json
    from terraloc.errors import InputError

    size_list = parse_list(sizes, "--sizes", size_cast)
    noise_list = parse_list(noise, "--noise", float)
    backend_list = parse_backends(backends)
    if queries is not None and queries < 1:
        raise InputError("must be at least 1", field="--queries")
    if single < 1:
        raise InputError("must be at least 1", field="--single")
    from terraloc.cli.progress import count_bar

    with count_bar("embedding gallery") as bar:
        runs = run_benchmark(
            size_list,
            noise_list,
            backend_list,
            n_queries=queries,
            n_single=single,
            log=lambda m: err_console.print(m, markup=False),
            progress=bar,
        )
    if as_json:
        typer.echo(to_json(runs))
        return
    out_console().print(render_table(runs))
