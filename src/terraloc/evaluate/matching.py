"""Do these predictions belong to this benchmark? Match shares, the best-matching benchmark, subsets.

The rule ``terraloc eval`` applies (docs/cli.md, "Scoring a subset"):

* at least :data:`MIN_MATCH_SHARE` of the predicted images must be images of the benchmark,
  otherwise the predictions were made for another set of photos: the evaluation stops (exit 2)
  and names the benchmark they match best, or ``--ground-truth``;
* predictions for only part of the benchmark are scored against all of it (a missing image is
  wrong, as the papers count) and the coverage is shown first; ``--subset`` scores only the
  benchmark images named in the predictions instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terraloc.errors import InputError
from terraloc.evaluate.benchmarks import BENCHMARKS, GroundTruth, load_benchmark
from terraloc.evaluate.ids import image_key
from terraloc.evaluate.predictions import Predictions

#: Share of the predicted images that must belong to the benchmark.
MIN_MATCH_SHARE = 0.5


@dataclass(frozen=True)
class MatchShare:
    """How a predictions file overlaps a ground truth.

    Attributes:
        name: the ground truth's name.
        predicted: distinct images in the predictions file.
        matched: of those, images of the ground truth.
        size: images in the ground truth.
    """

    name: str
    predicted: int
    matched: int
    size: int

    @property
    def share(self) -> float:
        """``matched / predicted`` (0..1; 0 for an empty file)."""
        return self.matched / self.predicted if self.predicted else 0.0


def match_share(gt: GroundTruth, preds: Predictions) -> MatchShare:
    """The overlap of ``preds`` with ``gt`` by image key (file-name stem)."""
    keys = {image_key(i) for i in preds.ids}
    return MatchShare(gt.name, len(keys), len(keys & set(gt.keys)), len(gt))


def best_benchmarks(preds: Predictions) -> list[MatchShare]:
    """Every named benchmark whose ground truth is on disk, best match first (most matched images)."""
    out = []
    for name in BENCHMARKS:
        try:
            gt = load_benchmark(name)
        except Exception:  # a benchmark file that is not on this machine
            continue
        out.append(match_share(gt, preds))
    return sorted(out, key=lambda m: (-m.matched, m.name))


def check_match(gt: GroundTruth, preds: Predictions, *, min_share: float = MIN_MATCH_SHARE) -> MatchShare:
    """Refuse predictions made for other photos than ``gt``'s.

    Raises:
        InputError: fewer than ``min_share`` of the predicted images belong to ``gt``; the message
            names the named benchmark that matches best (or suggests ``--ground-truth``).
    """
    m = match_share(gt, preds)
    if m.predicted == 0 or m.share >= min_share:
        return m
    others = [b for b in best_benchmarks(preds) if b.name != gt.name and b.matched > m.matched]
    if others:
        b = others[0]
        hint = f"they match {b.name} best ({b.matched} of {b.predicted}): use --benchmark {b.name}"
    elif gt.name in BENCHMARKS:
        hint = "no named benchmark matches them better: score them with --ground-truth FILE"
    else:
        hint = "images are matched by file-name stem; check the id column (--id-col) of both files"
    raise InputError(
        f"only {m.matched} of {m.predicted} predicted images ({100 * m.share:.1f}%) are images of {gt.name} "
        f"(at least {100 * min_share:.0f}% must be); {hint}",
        path=preds.path,
    )


def subset(gt: GroundTruth, preds: Predictions) -> GroundTruth:
    """``gt`` restricted to the images named in ``preds`` (order kept)."""
    keys = {image_key(i) for i in preds.ids}
    keep = [i for i, k in enumerate(gt.keys) if k in keys]
    return GroundTruth(
        name=gt.name, ids=[gt.ids[i] for i in keep], coords=np.asarray(gt.coords[keep]).reshape(-1, 2), path=gt.path
    )
