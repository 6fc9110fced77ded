"""Choosing one location from candidates and LLM answers.

Methods:

* ``first``: the retrieval's top candidate (the baseline).
* ``consensus``: geo-consensus. A rank-weighted kernel density over all candidates (and LLM
  answers, each with its own weight) evaluated at every candidate; the densest candidate wins.
  The kernel is a sum of Gaussians in great-circle distance at several bandwidths (10, 100 and
  1000 km by default) so that street-level agreement and country-level agreement both count.
  Weights fall with rank as ``1 / (1 + rank) ** alpha``.
* ``llm``: the LLM's own answer (the densest of the LLM answers when there are several, as in
  G3's diversified sampling); falls back to ``consensus`` when every LLM answer failed.
* ``verify``: G3 verification. The cosine between the image embedding and the location-encoder
  embedding of each candidate; only valid when the image embedding lives in the location
  encoder's space (GeoCLIP image head + GeoCLIP location encoder).

The defaults (20 candidates, bandwidths 10/100/1000 km, alpha 0.25) were chosen by measurement
on the G3 candidates file; see ``docs/rag.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.geo import pairwise_haversine_km
from terraloc.rag.candidates import SOURCE_LLM, Candidate, CandidateSet, coords_of

METHODS = ("first", "consensus", "llm", "verify")


@dataclass(frozen=True)
class GeoConsensusConfig:
    """Parameters of geo-consensus.

    Attributes:
        top_k: how many retrieval candidates (nearest first) take part.
        bandwidths_km: Gaussian kernel widths in km; the kernel is their sum.
        alpha: rank decay exponent of the weights ``1 / (1 + rank) ** alpha``.
        llm_weight: weight of each valid LLM answer relative to a rank-0 candidate.
        dedupe_km: when ranking several locations, a candidate this close to a better one is
            merged into it.
    """

    top_k: int = 20
    bandwidths_km: tuple[float, ...] = (10.0, 100.0, 1000.0)
    alpha: float = 0.25
    llm_weight: float = 1.0
    dedupe_km: float = 1.0


@dataclass
class Selection:
    """A chosen location and how it was chosen.

    Attributes:
        lat, lon: degrees, or ``nan`` when nothing could be chosen.
        method: the method that produced it (after any fallback).
        support: the method's score of the winner (density, cosine, ...).
        chosen: the winning candidate.
    """

    lat: float
    lon: float
    method: str
    support: float = math.nan
    chosen: Candidate | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return math.isfinite(self.lat) and math.isfinite(self.lon)


def kernel_density(
    at: NDArray[np.float64],
    points: NDArray[np.float64],
    weights: NDArray[np.float64],
    bandwidths_km: Sequence[float],
) -> NDArray[np.float64]:
    """Weighted multi-bandwidth Gaussian kernel density.

    Args:
        at: ``(M, 2)`` degrees where the density is evaluated.
        points: ``(N, 2)`` degrees of the kernel centres.
        weights: ``(N,)`` non-negative weights.
        bandwidths_km: kernel widths in km.

    Returns:
        ``(M,)`` densities ``sum_i w_i sum_h exp(-(d_i / h)^2)`` (unnormalised).
    """
    d = pairwise_haversine_km(at, points)  # (M, N) km
    k = np.zeros_like(d)
    for h in bandwidths_km:
        k += np.exp(-((d / float(h)) ** 2))
    return np.asarray(k @ np.asarray(weights, dtype=np.float64), dtype=np.float64)


def rank_weights(candidates: Sequence[Candidate], alpha: float) -> NDArray[np.float64]:
    """``(N,)`` weights ``1 / (1 + rank) ** alpha``."""
    ranks = np.array([c.rank for c in candidates], dtype=np.float64)
    return np.asarray(1.0 / (1.0 + ranks) ** alpha, dtype=np.float64)


def select_first(cset: CandidateSet) -> Selection:
    """The top retrieval candidate."""
    pool = cset.pool()
    if not pool:
        return Selection(math.nan, math.nan, "first")
    best = min(pool, key=lambda c: c.rank)
    return Selection(best.lat, best.lon, "first", best.score, best)


def rank_consensus(
    cset: CandidateSet,
    llm_answers: Sequence[Candidate] = (),
    config: GeoConsensusConfig | None = None,
    top_k: int = 1,
) -> list[tuple[Candidate, float]]:
    """Geo-consensus ranking: the ONE selection of ``rag eval`` and ``predict --reasoner rag``.

    The top ``config.top_k`` retrieval candidates (by rank) and the valid LLM answers are kernel
    centres (weights ``1 / (1 + rank) ** alpha`` and ``llm_weight``); each of them is scored by the
    density at its location. Returns up to ``top_k`` ``(candidate, density)`` pairs, densest first,
    skipping candidates within ``config.dedupe_km`` of one already chosen. Ties go to the
    better-ranked retrieval candidate, then to the LLM answers in order.
    """
    cfg = config or GeoConsensusConfig()
    pool = sorted(cset.pool(), key=lambda c: c.rank)[: cfg.top_k]
    llm = list(llm_answers)
    parts = pool + llm
    if not parts:
        return []
    w = np.concatenate([rank_weights(pool, cfg.alpha), np.full(len(llm), cfg.llm_weight)])
    xy = coords_of(parts)
    dens = kernel_density(xy, xy, w, cfg.bandwidths_km)
    order = np.argsort(-dens, kind="stable")  # first maximum first: retrieval order, then LLM order
    d = pairwise_haversine_km(xy, xy)
    chosen: list[int] = []
    for i in order:
        if all(d[i, j] > cfg.dedupe_km for j in chosen):
            chosen.append(int(i))
        if len(chosen) == top_k:
            break
    return [(parts[i], float(dens[i])) for i in chosen]


def select_consensus(
    cset: CandidateSet,
    llm_answers: Sequence[Candidate] = (),
    config: GeoConsensusConfig | None = None,
) -> Selection:
    """Geo-consensus over the top-k candidates plus the valid LLM answers: the first of :func:`rank_consensus`."""
    ranked = rank_consensus(cset, llm_answers, config, top_k=1)
    if not ranked:
        return Selection(math.nan, math.nan, "consensus")
    c, density = ranked[0]
    return Selection(c.lat, c.lon, "consensus", density, c, {"n_llm": len(llm_answers)})


def select_llm(
    cset: CandidateSet,
    llm_answers: Sequence[Candidate],
    config: GeoConsensusConfig | None = None,
) -> Selection:
    """The LLM's own answer: the densest among the LLM answers (the only one when there is one).

    Falls back to :func:`select_consensus` over the retrieval candidates when no answer is valid.
    """
    cfg = config or GeoConsensusConfig()
    llm = [c for c in llm_answers if c.source.startswith(SOURCE_LLM)]
    if not llm:
        sel = select_consensus(cset, (), cfg)
        sel.details["fallback"] = "no valid LLM answer"
        return sel
    xy = coords_of(llm)
    dens = kernel_density(xy, xy, np.ones(len(llm)), cfg.bandwidths_km)
    i = int(np.argmax(dens))
    c = llm[i]
    return Selection(c.lat, c.lon, "llm", float(dens[i]), c, {"n_llm": len(llm)})


def select_verify(
    image_embedding: NDArray[np.floating],
    candidates: Sequence[Candidate],
    location_encoder: Any,
) -> Selection:
    """G3 verification: the candidate whose location embedding is most similar to the image.

    Args:
        image_embedding: ``(D,)`` image embedding *in the location encoder's space* (for
            GeoCLIP: the image head's output, D = 512); normalised here.
        candidates: the locations to verify (retrieval candidates and LLM answers).
        location_encoder: a :class:`terraloc.encoders.LocationEncoder` (``(N, 2)`` degrees ->
            ``(N, D)``) or any callable with ``.encode(tensor, normalize=True)``.

    Raises:
        ValueError: when the dimensions differ, i.e. the two embeddings are not in one space.
    """
    import torch

    if not candidates:
        return Selection(math.nan, math.nan, "verify")
    q = np.asarray(image_embedding, dtype=np.float32).reshape(-1)
    with torch.no_grad():
        loc = location_encoder.encode(torch.as_tensor(coords_of(candidates), dtype=torch.float32), normalize=True)
    loc_np = loc.detach().cpu().numpy().astype(np.float32)
    if loc_np.shape[1] != q.shape[0]:
        raise ValueError(
            f"verification needs the image embedding in the location encoder's space: "
            f"image embedding has {q.shape[0]} dimensions, location embeddings {loc_np.shape[1]}"
        )
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    cos = loc_np @ q
    i = int(np.argmax(cos))
    c = candidates[i]
    return Selection(c.lat, c.lon, "verify", float(cos[i]), c, {"cosines": cos.tolist()})


def select(
    method: str,
    cset: CandidateSet,
    llm_answers: Sequence[Candidate] = (),
    config: GeoConsensusConfig | None = None,
    *,
    image_embedding: NDArray[np.floating] | None = None,
    location_encoder: Any = None,
) -> Selection:
    """Dispatch to one of :data:`METHODS` by name."""
    if method == "first":
        return select_first(cset)
    if method == "consensus":
        return select_consensus(cset, llm_answers, config)
    if method == "llm":
        return select_llm(cset, llm_answers, config)
    if method == "verify":
        if image_embedding is None or location_encoder is None:
            raise ValueError("verification needs an image embedding and a location encoder")
        return select_verify(image_embedding, [*cset.pool(), *llm_answers], location_encoder)
    raise ValueError(f"unknown selection method '{method}'; choose one of {', '.join(METHODS)}")
