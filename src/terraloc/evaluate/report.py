"""Evaluation reports: ``metrics.json``, ``report.md``, an error-CDF plot and an error map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from terraloc.evaluate.metrics import THRESHOLD_KEYS, THRESHOLDS_KM, EvalResult
from terraloc.evaluate.published import published_for
from terraloc.io import atomic_write_bytes, atomic_write_text


def _savefig(fig: object, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def plot_error_cdf(result: EvalResult, path: Path, label: str = "") -> None:
    """Cumulative share of images (y, %) within each error distance (x, km, log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.sort(result.distances_km)
    finite = d[np.isfinite(d)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if finite.size:
        y = np.arange(1, finite.size + 1) / result.n * 100.0
        ax.step(np.maximum(finite, 0.01), y, where="post", label=label or "this run")
    for t in THRESHOLDS_KM:
        ax.axvline(t, color="grey", ls="--", lw=0.8)
        ax.text(t, 101, f"{t} km\n{result.accuracy[str(t)]:.1f}%", ha="center", va="bottom", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(0.1, 20100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("great-circle error (km, log scale)")
    ax.set_ylabel("images within error (%)")
    cov = f", coverage {result.coverage:.1f}%" if result.n_predicted < result.n else ""
    ax.set_title(f"Error CDF on {result.benchmark} (n={result.n}{cov})", pad=28)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    _savefig(fig, path)


def plot_error_map(result: EvalResult, path: Path) -> None:
    """World map (plate carrée) of ground-truth locations coloured by error (km, log colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from terraloc.geo.worldmap import country_rings

    fig, ax = plt.subplots(figsize=(11, 5.6))
    for ring in country_rings():
        # Rings crossing the antimeridian (Russia, Fiji, Antarctica) are unwrapped to continuous
        # longitudes and drawn again shifted by 360 degrees; the axes clip to [-180, 180].
        lon = np.degrees(np.unwrap(np.radians(ring[:, 0])))
        for shift in {0.0, -360.0 if lon.max() > 180 else 0.0, 360.0 if lon.min() < -180 else 0.0}:
            ax.fill(lon + shift, ring[:, 1], color="#eeeeee", ec="#999999", lw=0.3, zorder=1)
    ax.set_facecolor("#dbe9f4")
    lat, lon = result.coords_true[:, 0], result.coords_true[:, 1]
    d = result.distances_km
    has = np.isfinite(d)
    sc = ax.scatter(
        lon[has],
        lat[has],
        c=np.clip(d[has], 1, 20038),
        s=7,
        cmap="RdYlGn_r",
        norm=LogNorm(vmin=1, vmax=20038),
        zorder=3,
        lw=0,
    )
    if (~has).any():
        ax.scatter(lon[~has], lat[~has], marker="x", c="black", s=10, zorder=4, lw=0.7, label="no prediction")
        ax.legend(loc="lower left")
    cb = fig.colorbar(sc, ax=ax, shrink=0.8, pad=0.01)
    cb.set_label("error (km, log scale)")
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_aspect("equal")
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_title(f"Ground-truth locations on {result.benchmark}, coloured by prediction error")
    _savefig(fig, path)


def markdown_report(result: EvalResult, predictions: str) -> str:
    """A Markdown summary: the run, the published figures in the file, and the literature."""
    th = list(THRESHOLD_KEYS)
    head = "| | " + " | ".join(f"{t} km" for t in th) + " |\n|---|" + "---|" * len(th) + "\n"
    lines = [
        f"# terraloc evaluation: {result.benchmark}",
        "",
        f"Predictions: `{predictions}`",
        "",
        f"- images: {result.n}; with a prediction: {result.n_predicted} (coverage {result.coverage:.1f}%)",
        f"- median error: {result.median_km:.1f} km; mean error: {result.mean_km:.1f} km"
        " (over images with a prediction)"
        if result.median_km is not None
        else "- no image has a prediction",
        f"- GeoScore (5000·exp(-d/1492.7), mean over all images): {result.geoscore:.1f}",
        f"- predictions for images outside the benchmark (ignored): {result.extra_predictions}",
        "",
        "Accuracy (% of all benchmark images within the distance; `<=`, haversine, R = 6371.0088 km):",
        "",
        head + "| this run | " + " | ".join(f"{result.accuracy[t]:.1f}" for t in th) + " |",
        "| 95% CI | " + " | ".join(f"{result.ci95[t][0]:.1f}–{result.ci95[t][1]:.1f}" for t in th) + " |",
    ]
    if result.published:
        pub = " | ".join(f"{result.published[t]:.1f}" if t in result.published else "–" for t in th)
        lines.append(f"| published in the file | {pub} |")
    rows = published_for(result.benchmark)
    if rows:
        lines += ["", "Published results on this benchmark (authors' numbers, not recomputed):", "", head.rstrip()]
        for r in rows:
            lines.append(f"| {r.label} | " + " | ".join(f"{r.accuracy[t]:.1f}" for t in th) + " |")
        lines += ["", "† read in a paper that cites the original.", "", "Sources:"]
        lines += [f"- {r.label}: {r.source}" for r in rows]
    lines += ["", "![error CDF](error_cdf.png)", "", "![error map](error_map.png)", ""]
    return "\n".join(lines)


def write_report(result: EvalResult, out_dir: str | Path, predictions: str) -> list[Path]:
    """Write ``metrics.json``, ``report.md``, ``error_cdf.png`` and ``error_map.png`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result.to_json(), indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown_report(result, predictions))
    plot_error_cdf(result, out / "error_cdf.png")
    plot_error_map(result, out / "error_map.png")
    return [out / n for n in ("metrics.json", "report.md", "error_cdf.png", "error_map.png")]
