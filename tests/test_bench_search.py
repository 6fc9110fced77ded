"""The search benchmark on a tiny configuration, through the CLI, with its JSON schema."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from terraloc.bench.search import jittered_coords, parse_backends
from terraloc.errors import InputError

ACC_KEYS = {"1", "25", "200", "750", "2500"}
RUN_KEYS = {
    "gallery_size",
    "backend",
    "noise",
    "comparisons_per_query",
    "ms_per_query_batched",
    "ms_per_query_single",
    "build_s",
    "memory_mb",
    "accuracy",
}


@pytest.mark.slow
def test_bench_search_json_tiny(cli, shared) -> None:  # type: ignore[no-untyped-def]
    r = cli(
        "bench", "search", "--sizes", "2000", "--queries", "200", "--noise", "0,0.25",
        "--backends", "flat;hierarchical;IVF16,Flat@nprobe=4", "--single", "5", "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    runs = json.loads(r.out)["runs"]
    assert [(x["backend"], x["noise"]) for x in runs] == [
        (b, s) for b in ("flat", "hierarchical", "IVF16,Flat") for s in (0.0, 0.25)
    ]
    for run in runs:
        assert set(run) >= RUN_KEYS and set(run["accuracy"]) == ACC_KEYS
        assert run["gallery_size"] == 2000 and run["queries"] == 200
        assert all(0 <= v <= 100 for v in run["accuracy"].values())
        assert list(run["accuracy"].values()) == sorted(run["accuracy"].values())  # nested thresholds
        assert run["ms_per_query_batched"] > 0 and run["ms_per_query_single"] > 0 and run["memory_mb"] > 0
    flat = {x["noise"]: x for x in runs if x["backend"] == "flat"}
    assert flat[0.0]["comparisons_per_query"] == 2000
    # Clean location embeddings find nearby gallery points; noise costs accuracy.
    assert flat[0.0]["accuracy"]["2500"] > 90 and flat[0.25]["accuracy"]["2500"] < flat[0.0]["accuracy"]["2500"]
    for x in runs:
        if x["backend"] != "flat":
            assert x["comparisons_per_query"] < 2000


def test_bench_search_bad_arguments(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("bench", "search", "--sizes", "abc")
    assert r.code == 2 and "--sizes" in r.err
    r = cli("bench", "search", "--backends", "flat@beam")
    assert r.code == 2 and "key=value" in r.err


def test_parse_backends_and_jitter() -> None:
    names = [b.name for b in parse_backends("flat,hierarchical,HNSW32,IVF1024,Flat,OPQ16,IVF256,PQ16")]
    assert names == ["flat", "hierarchical", "HNSW32", "IVF1024,Flat", "OPQ16,IVF256,PQ16"]
    b = parse_backends("hierarchical@beam=8,leaf_beam=6;IVF64,PQ8@nprobe=2")
    assert b[0].options == {"beam": 8, "leaf_beam": 6} and b[1].options == {"params": "nprobe=2"}
    assert parse_backends("hierarchical@routing=learned,beam=8;flat")[0].options == {"routing": "learned", "beam": 8}
    with pytest.raises(InputError, match="not a number"):
        parse_backends("hierarchical@beam=wide;flat")
    base = np.array([[10.0, 20.0], [-30.0, 179.99], [89.99, 0.0]])
    big = jittered_coords(base, 250_003)
    assert big.shape == (250_003, 2) and np.array_equal(big[:3], base)
    np.testing.assert_array_equal(jittered_coords(base, 1000), big[:1000])  # prefix-stable
    assert (np.abs(big[:, 0]) <= 90).all() and (np.abs(big[:, 1]) <= 180).all()


def test_render_table_keeps_long_backend_names() -> None:
    """A backend with many options wraps in the table instead of being cut to an ellipsis."""
    from rich.console import Console

    from terraloc.cli.bench_search_cmd import render_table

    acc = {t: 50.0 for t in sorted(ACC_KEYS)}
    base = {"gallery_size": 100000, "noise": 0.2, "ms_per_query_batched": 0.5, "ms_per_query_single": 1.0}
    base |= {"build_s": 1.0, "memory_mb": 10.0, "accuracy": acc}
    opts = {"spill": 0.06, "routing": "learned", "leaf_beam": 16, "parent_weight": 0.015}
    runs = [
        {**base, "backend": "flat", "comparisons_per_query": 100000},
        {**base, "backend": "hierarchical", "options": opts, "comparisons_per_query": 940},
    ]
    console = Console(width=150, record=True, file=io.StringIO())
    console.print(render_table(runs))
    lines = [ln.split("│") for ln in console.export_text().splitlines() if ln.startswith("│")]
    backend = "".join(cells[2].strip() for cells in lines[1:])  # the hierarchical row's wrapped cell
    assert backend == "hierarchical@spill=0.06,routing=learned,leaf_beam=16,parent_weight=0.015"
