"""Published results of the systems terraloc reproduces, from ``data/published_results.json``.

Each entry carries its source (paper, table, address). Rows marked ``second_hand`` were read in a
paper or list that cites the original, not in the original itself (shown with a dagger). These are
the authors' numbers, shown beside a run for comparison; terraloc does not recompute them.
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
    second_hand: bool = False

    @property
    def label(self) -> str:
        """Display name: method, variant, and a dagger when read from a citing paper."""
        name = f"{self.method} ({self.variant})" if self.variant else self.method
        return name + (" †" if self.second_hand else "")


@functools.lru_cache(maxsize=1)
def published_results() -> tuple[PublishedResult, ...]:
    """All published rows in the data file."""
    with open(package_data("published_results.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    rows = []
    for r in data["results"]:
        acc = {str(t): float(v) for t, v in zip(THRESHOLDS_KM, r["accuracy"], strict=True)}
        rows.append(
            PublishedResult(
                r["method"], r["benchmark"], acc, r["source"], r.get("variant", ""), bool(r.get("second_hand"))
            )
        )
    return tuple(rows)


def published_for(benchmark: str) -> list[PublishedResult]:
    """Published rows for one benchmark, in file order."""
    return [r for r in published_results() if r.benchmark == benchmark.lower()]
