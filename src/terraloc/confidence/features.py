"""Confidence features: how much a head's candidates agree, computed the same way for any head.

Input is what every head produces: candidate coordinates ``(N, k, 2)`` (lat, lon degrees; NaN
rows are padding) and their probabilities or weights ``(N, k)`` (any non-negative scale; they
are normalised over each image's valid candidates), plus the index of the candidate the head
answers with (default: the first, i.e. candidates best first). Optional extras from
retrieval-augmented reasoning: the locations of the farthest (least similar) references and of
the LLM's answers.

Every feature is finite for a valid input; the table of names is :data:`FEATURE_DOC` (also in
``docs/confidence.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from terraloc.errors import InputError
from terraloc.geo import haversine_km

SCALES_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)
FEATURES_VERSION = 1

FEATURE_DOC: dict[str, str] = {
    **{
        f"mass_{t}km": f"share of the candidates' probability within {t} km of the answer (answer included)"
        for t in SCALES_KM
    },
    **{
        f"agree_{t}km": f"Gaussian kernel density at the answer, bandwidth {t} km: "
        f"sum_j p_j exp(-(d_j/{t})^2), p normalised"
        for t in SCALES_KM
    },
    "top_prob": "the answer's own normalised probability",
    "margin": "normalised probability of the best candidate minus the second best",
    "entropy": "Shannon entropy of the normalised probabilities divided by log(k) (0 = one candidate holds all)",
    "spread_km": "log(1 + weighted median distance in km of the candidates from the answer)",
    "captured": "sum of the raw probabilities of the k candidates (1 for normalised scores; for a softmax "
    "over a large gallery, the share the top-k hold)",
    "far_min_km": "RAG only: log(1 + distance in km from the answer to the nearest of the farthest references)",
    "far_mean_km": "RAG only: log(1 + mean distance in km from the answer to the farthest references)",
    "llm_spread_km": "RAG with an LLM only: log(1 + median distance in km of the LLM's answers from the answer)",
    "llm_agree_25km": "RAG with an LLM only: share of the LLM's answers within 25 km of the answer",
}
BASE_FEATURES: tuple[str, ...] = (
    *(f"mass_{t}km" for t in SCALES_KM),
    *(f"agree_{t}km" for t in SCALES_KM),
    "top_prob",
    "margin",
    "entropy",
    "spread_km",
    "captured",
)
FAR_FEATURES: tuple[str, ...] = ("far_min_km", "far_mean_km")
LLM_FEATURES: tuple[str, ...] = ("llm_spread_km", "llm_agree_25km")


@dataclass(frozen=True)
class Features:
    """A feature matrix with its column names.

    Attributes:
        names: ``F`` feature names (see :data:`FEATURE_DOC`).
        values: ``(N, F)`` float64.
    """

    names: tuple[str, ...]
    values: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def row(self, i: int) -> dict[str, float]:
        """Image ``i``'s features as ``{name: value}``."""
        return {n: float(v) for n, v in zip(self.names, self.values[i], strict=True)}

    def select(self, names: tuple[str, ...] | list[str]) -> NDArray[np.float64]:
        """``(N, len(names))`` columns in the order asked; a missing name is an :class:`InputError`."""
        pos = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in pos]
        if missing:
            raise InputError(
                f"predictions lack the confidence feature(s) {', '.join(missing)} that the calibrator needs"
            )
        return self.values[:, [pos[n] for n in names]]

    @classmethod
    def from_rows(cls, rows: list[dict[str, float]]) -> Features:
        """Rows of ``{name: value}`` (all with the same names) as a matrix."""
        if not rows:
            return cls((), np.zeros((0, 0)))
        names = tuple(rows[0])
        return cls(
            names, np.array([[float(r[n]) for n in names] for r in rows], dtype=np.float64).reshape(-1, len(names))
        )


def _pad(a: ArrayLike | None, n: int) -> NDArray[np.float64] | None:
    if a is None:
        return None
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] != n or arr.shape[2] != 2:
        raise ValueError(f"expected (N, m, 2) coordinates with N = {n}, got shape {arr.shape}")
    return arr


def _weighted_median(d: NDArray[np.float64], w: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise weighted median of ``d`` ``(N, k)`` with weights ``w`` (rows sum to 1, 0 = padding)."""
    order = np.argsort(d, axis=1)
    ds = np.take_along_axis(d, order, 1)
    cw = np.cumsum(np.take_along_axis(w, order, 1), axis=1)
    idx = np.argmax(cw >= 0.5 - 1e-12, axis=1)
    return ds[np.arange(d.shape[0]), idx]


def confidence_features(
    coords: ArrayLike,
    probs: ArrayLike,
    *,
    top: ArrayLike | None = None,
    farthest: ArrayLike | None = None,
    llm: ArrayLike | None = None,
) -> Features:
    """Confidence features of ``N`` images.

    Args:
        coords: ``(N, k, 2)`` candidate (lat, lon) degrees; rows with NaN are padding.
        probs: ``(N, k)`` non-negative probabilities or weights (normalised here per image).
        top: ``(N,)`` index of the answer among the candidates (default 0 = the first).
        farthest: optional ``(N, m, 2)`` farthest references (RAG); NaN rows are padding.
        llm: optional ``(N, j, 2)`` LLM answers (RAG); NaN rows are padding (images with no
            valid answer get spread 20,000 km and agreement 0).

    Returns:
        :class:`Features` with :data:`BASE_FEATURES`, then :data:`FAR_FEATURES` when
        ``farthest`` is given and :data:`LLM_FEATURES` when ``llm`` is given.

    Raises:
        InputError: an image without any valid candidate, or negative / non-finite probabilities.
    """
    xy = np.asarray(coords, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[2] != 2 or p.shape != xy.shape[:2]:
        raise ValueError(f"expected coords (N, k, 2) and probs (N, k), got {xy.shape} and {p.shape}")
    n, k = p.shape
    valid: NDArray[np.bool_] = np.asarray(np.isfinite(xy).all(axis=2), dtype=bool)
    if n and (~valid.any(axis=1)).any():
        i = int(np.flatnonzero(~valid.any(axis=1))[0])
        raise InputError(f"image #{i} has no valid candidate to compute confidence features from")
    pv = np.where(valid, p, 0.0)
    if not np.isfinite(pv).all() or (pv < 0).any():
        raise InputError("candidate probabilities must be finite and non-negative")
    captured = pv.sum(axis=1)
    w = np.where(
        captured[:, None] > 0, pv / np.where(captured > 0, captured, 1.0)[:, None], valid / valid.sum(1, keepdims=True)
    )
    ti = np.zeros(n, dtype=np.int64) if top is None else np.asarray(top, dtype=np.int64).reshape(n)
    rows = np.arange(n)
    anchor = xy[rows, ti]  # (N, 2)
    if not np.isfinite(anchor).all():
        raise InputError("the answer's index points at a padding candidate")
    safe = np.where(valid[..., None], xy, anchor[:, None, :])
    d = haversine_km(anchor[:, None, :], safe)  # (N, k)
    cols: dict[str, NDArray[np.float64]] = {}
    for t in SCALES_KM:
        cols[f"mass_{t}km"] = (w * (d <= t)).sum(axis=1)
    for t in SCALES_KM:
        cols[f"agree_{t}km"] = (w * np.exp(-((d / t) ** 2))).sum(axis=1)
    srt = -np.sort(-w, axis=1)
    cols["top_prob"] = w[rows, ti]
    cols["margin"] = srt[:, 0] - (srt[:, 1] if k > 1 else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0).sum(axis=1)
    kk = valid.sum(axis=1)
    cols["entropy"] = np.where(kk > 1, ent / np.log(np.maximum(kk, 2)), 0.0)
    cols["spread_km"] = np.log1p(_weighted_median(d, w))
    cols["captured"] = np.where(captured <= 1.0 + 1e-6, np.minimum(captured, 1.0), 1.0)
    names = list(BASE_FEATURES)
    far = _pad(farthest, n)
    if far is not None:
        fv: NDArray[np.bool_] = np.asarray(np.isfinite(far).all(axis=2), dtype=bool)
        fd = haversine_km(anchor[:, None, :], np.where(fv[..., None], far, 0.0))
        fd_min = np.where(fv, fd, np.inf).min(axis=1, initial=np.inf)
        fd_mean = np.where(fv, fd, 0.0).sum(axis=1) / np.maximum(fv.sum(axis=1), 1)
        # no farthest reference at all: treat as "far away" (no negative evidence)
        cols["far_min_km"] = np.log1p(np.where(np.isfinite(fd_min), fd_min, 20015.0))
        cols["far_mean_km"] = np.log1p(np.where(fv.any(axis=1), fd_mean, 20015.0))
        names += FAR_FEATURES
    ans = _pad(llm, n)
    if ans is not None:
        av: NDArray[np.bool_] = np.asarray(np.isfinite(ans).all(axis=2), dtype=bool)
        ad = haversine_km(anchor[:, None, :], np.where(av[..., None], ans, 0.0))
        med = np.array([np.median(ad[i, av[i]]) if av[i].any() else 20015.0 for i in range(n)])
        cols["llm_spread_km"] = np.log1p(med)
        cols["llm_agree_25km"] = np.where(av, ad <= 25.0, False).sum(axis=1) / np.maximum(av.sum(axis=1), 1)
        names += LLM_FEATURES
    values = np.stack([cols[c] for c in names], axis=1) if n else np.zeros((0, len(names)))
    return Features(tuple(names), values.astype(np.float64))


def candidates_features(candidates: object, **extras: ArrayLike | None) -> Features:
    """:func:`confidence_features` of a :class:`terraloc.models.head.Candidates` (or anything with
    ``coords (N, k, 2)`` and ``probs (N, k)``; NaN-padded slots are ignored), answer = first candidate."""
    return confidence_features(candidates.coords, candidates.probs, **extras)  # type: ignore[attr-defined,arg-type]
