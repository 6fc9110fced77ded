"""Plots of a calibration report: reliability diagram and risk–coverage (selective accuracy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terraloc.evaluate.report import _savefig


def plot_reliability(report: dict[str, Any], path: Path, title: str = "") -> None:
    """Observed frequency (y) against mean predicted P(error <= t) (x) per 10%-bin, one line per threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfect calibration")
    for t, bins in report["reliability"].items():
        xs = [b["mean_p"] for b in bins]
        ys = [b["freq"] for b in bins]
        ax.plot(xs, ys, marker="o", ms=3, lw=1.2, label=f"{t} km (ECE {report['ece'][t]:.1f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(error <= t)")
    ax.set_ylabel("observed share within t")
    ax.set_title(title or f"Reliability diagram (n = {report['n']}, 10 equal-width bins)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    _savefig(fig, path)


def plot_risk_coverage(report: dict[str, Any], path: Path, title: str = "") -> None:
    """Accuracy at t among the most confident c% of photos (x = coverage c), one line per threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for t, sel in report["selective"].items():
        cov = [int(c) for c in sel]
        ax.plot(cov, list(sel.values()), marker="o", ms=3, label=f"{t} km")
    ax.set_xlabel("coverage: most confident photos kept (%)")
    ax.set_ylabel("accuracy among them (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_title(title or f"Selective prediction (n = {report['n']})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    _savefig(fig, path)
