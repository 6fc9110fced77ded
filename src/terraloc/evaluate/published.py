"""Published results of the systems terraloc reproduces, from ``data/published_results.json``.

Each entry carries its source (paper, table, address). These are the authors' numbers, shown
beside a run for comparison; terraloc does not recompute them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from terraloc.config import package_data
from terraloc.evaluate.metrics import THRESHOLDS_KM


@dataclass(frozen=True)
class PublishedResult:
    """One published row: accuracies in percent at :data:`THRESHOLDS_KM`."""

    method: str
    benchmark: str
    accuracy: dict[str, float]
    source: str
    variant: str = ""


@functools.lru_cache(maxsize=1)
def published_results() -> tuple[PublishedResult, ...]:
    """All published rows in the data file."""
    with open(package_data("published_results.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    rows = []
    for r in data["results"]:
        acc = {str(t): float(v) for t, v in zip(THRESHOLDS_KM, r["accuracy"], strict=True)}
        rows.append(PublishedResult(r["method"], r["benchmark"], acc, r["source"], r.get("variant", "")))
    return tuple(rows)


def published_for(benchmark: str) -> list[PublishedResult]:
    """Published rows for one benchmark, in file order."""
    return [r for r in published_results() if r.benchmark == benchmark.lower()]
