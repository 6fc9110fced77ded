"""``terraloc eval``: score predictions on a benchmark exactly as the papers do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from terraloc.cli.app import app, err_console, out_console
from terraloc.cli.options import BenchmarkOption, GroundTruthOption, IdColOption, LatColOption, LonColOption
from terraloc.errors import InputError


def render_eval_table(result: object, title: str, compare: bool = False) -> Table:
    """A Rich table of one :class:`EvalResult`, optionally with the published literature."""
    from terraloc.evaluate.metrics import THRESHOLD_KEYS, EvalResult
    from terraloc.evaluate.published import published_for

    assert isinstance(result, EvalResult)
    th = list(THRESHOLD_KEYS)
    table = Table(title=title)
    table.add_column("")
    for t in th:
        table.add_column(f"{t} km", justify="right")
    table.add_column("median km", justify="right")
    table.add_column("GeoScore", justify="right")
    med = "–" if result.median_km is None else f"{result.median_km:.1f}"
    table.add_row("this run", *[f"{result.accuracy[t]:.1f}" for t in th], med, f"{result.geoscore:.1f}", style="bold")
    table.add_row("95% CI", *[f"{result.ci95[t][0]:.1f}–{result.ci95[t][1]:.1f}" for t in th], "", "")
    if result.published:
        table.add_row(
            "published (file)",
            *[f"{result.published[t]:.1f}" if t in result.published else "–" for t in th],
            "",
            "",
        )
    if compare:
        for r in published_for(result.benchmark):
            table.add_row(r.label, *[f"{r.accuracy[t]:.1f}" for t in th], "", "", style="dim")
    return table


@app.command("eval")
def eval_command(
    predictions: Annotated[Path, typer.Option("--predictions", "-p", help="CSV/JSONL of predictions.")],
    benchmark: BenchmarkOption = None,
    ground_truth: GroundTruthOption = None,
    id_col: IdColOption = None,
    lat_col: LatColOption = None,
    lon_col: LonColOption = None,
    subset: Annotated[
        bool,
        typer.Option(
            "--subset",
            help="Score only the benchmark images named in the predictions (default: all of them; a missing "
            "image counts as wrong).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write metrics.json, report.md and plots here.")
    ] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Show published results on this benchmark.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
) -> None:
    """Score predictions against a benchmark's ground truth (accuracy at 1/25/200/750/2500 km)."""
    from terraloc.evaluate import evaluate, load_predictions, load_truth
    from terraloc.evaluate.published import published_for

    if bootstrap < 1:
        raise InputError("must be at least 1", field="--bootstrap")
    gt = load_truth(benchmark, ground_truth, id_col=id_col, lat_col=lat_col, lon_col=lon_col)
    preds = load_predictions(predictions)
    from terraloc.evaluate.matching import check_match
    from terraloc.evaluate.matching import subset as subset_of

    match = check_match(gt, preds)
    if subset:
        gt = subset_of(gt, preds)
    result = evaluate(gt, preds, n_boot=bootstrap)
    from terraloc.evaluate.confidence_eval import confidence_metrics

    calib = confidence_metrics(gt, preds)  # None unless the predictions carry confidence
    scope = {"subset": subset, "benchmark_images": match.size, "scored_images": result.n}
    if not subset and result.coverage < 100.0:
        err_console.print(
            f"coverage {result.coverage:.1f}%: {result.n_predicted:,} of {result.n:,} {result.benchmark} images have "
            f"a prediction; the other {result.n - result.n_predicted:,} count as wrong"
            + (f" (--subset scores only the {match.matched:,} predicted images)" if match.matched < result.n else ""),
            markup=False,
            style="bold yellow",
        )
    if out is not None:
        from terraloc.evaluate.report import write_report

        write_report(result, out, str(predictions))
        if calib is not None:
            from terraloc.evaluate.calibration_plots import plot_reliability, plot_risk_coverage
            from terraloc.io import atomic_write_text

            metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8")) | {"calibration": calib}
            atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
            plot_reliability(calib, out / "reliability.png")
            plot_risk_coverage(calib, out / "risk_coverage.png")
    if as_json:
        obj = result.to_json()
        if calib is not None:
            obj["calibration"] = calib
        obj.update(scope)
        if compare:
            obj["literature"] = [
                {
                    "method": r.method,
                    "variant": r.variant,
                    "accuracy": r.accuracy,
                    "source": r.source,
                    "second_hand": r.second_hand,
                }
                for r in published_for(result.benchmark)
            ]
        typer.echo(json.dumps(obj))
        return
    console = out_console()
    where = f"{result.benchmark} (subset: {result.n:,} of {match.size:,} images)" if subset else result.benchmark
    console.print(render_eval_table(result, f"{predictions.name} on {where}", compare))
    notes = [f"n = {result.n}, coverage {result.coverage:.1f}% ({result.n_predicted} with a prediction)"]
    if result.mean_km is not None:
        notes.append(f"mean error {result.mean_km:.1f} km over covered images")
    if result.extra_predictions:
        notes.append(f"{result.extra_predictions} prediction(s) for images outside the benchmark ignored")
    console.print("; ".join(notes))
    if calib is not None:
        from terraloc.cli.calibrate_cmd import calibration_tables

        for tab in calibration_tables(calib, "confidence"):
            console.print(tab)
        if calib["abstained"]:
            console.print(f"{calib['abstained']} abstained photo(s) count as not predicted")
    if compare and any(r.second_hand for r in published_for(result.benchmark)):
        console.print("† published figure read in a paper that cites it; sources in published_results.json")
    if out is not None:
        console.print(f"report written to {out}/ (metrics.json, report.md, error_cdf.png, error_map.png)")
