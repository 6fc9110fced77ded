"""``terraloc calibrate``: fit a confidence calibrator on predictions with ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from terraloc.cli.app import app, err_console, out_console
from terraloc.cli.options import BenchmarkOption, GroundTruthOption, IdColOption, LatColOption, LonColOption
from terraloc.errors import InputError


def calibration_tables(rep: dict[str, Any], title: str) -> list[Table]:
    """Two Rich tables of a calibration report: calibration per threshold, and selective accuracy."""
    th = [str(t) for t in (1, 25, 200, 750, 2500)]
    cal = Table(title=f"{title}: calibration of P(error <= t) (n = {rep['n']})")
    cal.add_column("")
    for t in th:
        cal.add_column(f"{t} km", justify="right")
    cal.add_row("ECE (points, 10 bins)", *[f"{rep['ece'][t]:.2f}" for t in th])
    cal.add_row("Brier", *[f"{rep['brier'][t]:.4f}" for t in th])
    cal.add_row("Brier, base rate", *[f"{rep['brier_base'][t]:.4f}" for t in th])
    cal.add_row("Brier skill", *[f"{100 * rep['brier_skill'][t]:.1f}%" for t in th])
    sel = Table(title=f"{title}: accuracy (%) among the most confident photos (ranked by P(error <= t))")
    sel.add_column("most confident")
    for t in th:
        sel.add_column(f"{t} km", justify="right")
    for c in ("10", "25", "50", "75", "100"):
        sel.add_row(f"{c}%", *[f"{rep['selective'][t][c]:.1f}" for t in th])
    return [cal, sel]


@app.command("calibrate")
def calibrate_command(
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions", "-p", help="Predictions with confidence features (predict -f jsonl, rag eval --out)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Calibrator JSON to write.")],
    benchmark: BenchmarkOption = None,
    ground_truth: GroundTruthOption = None,
    id_col: IdColOption = None,
    lat_col: LatColOption = None,
    lon_col: LonColOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the cross-validation folds.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Fit P(error <= 1/25/200/750/2500 km) from confidence features: isotonic, logistic or boosted
    trees, chosen by 5-fold cross-validation; prints nested cross-validated figures."""
    from terraloc.confidence.fitting import fit_calibrator
    from terraloc.evaluate import load_predictions, load_truth
    from terraloc.evaluate.confidence_eval import training_pairs

    if out.exists() and out.is_dir():
        raise InputError("is a folder; expected a file name for the calibrator", field="--out")
    gt = load_truth(benchmark, ground_truth, id_col=id_col, lat_col=lat_col, lon_col=lon_col)
    preds = load_predictions(predictions)
    names, x, err, identity = training_pairs(gt, preds)
    fit = fit_calibrator(x, err, names, identity, seed=seed, progress=lambda m: err_console.print(m, style="dim"))
    fit.calibrator.save(out)
    if as_json:
        typer.echo(json.dumps({"out": str(out), **fit.report}))
        return
    console = out_console()
    fam = Table(title=f"calibrator families, 3 x 5-fold out-of-fold, pooled ({fit.report['n_photos']} photos)")
    fam.add_column("family")
    fam.add_column("mean Brier", justify="right")
    fam.add_column("ECE 1/25/200/750/2500 km", justify="right")
    for name, r in fit.report["families"].items():
        ece = " / ".join(f"{v:.2f}" for v in r["ece"].values())
        fam.add_row(name + (" (chosen)" if name == fit.report["chosen"] else ""), f"{r['mean_brier']:.5f}", ece)
    console.print(fam)
    for t in calibration_tables(fit.report["nested"], "nested cross-validation"):
        console.print(t)
    console.print(f"calibrator ({fit.report['chosen']}) written to {out}")
