"""The RAG reasoner for :class:`terraloc.pipeline.Geolocator` (``terraloc predict --reasoner rag``).

For each photo it takes the reference database's nearest and farthest references, optionally
asks an LLM (G3-diversified prompts, see :mod:`terraloc.rag.prompts`), and ranks every candidate
location (references and LLM answers) by geo-consensus; the probabilities are the normalised
consensus densities of distinct locations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from terraloc.geo import pairwise_haversine_km
from terraloc.rag.candidates import SOURCE_FARTHEST, SOURCE_NEAREST, Candidate, CandidateSet, coords_of
from terraloc.rag.reasoner import ReasonerConfig, default_cache, parse_llm_spec, run_reasoner
from terraloc.rag.select import ConsensusConfig, kernel_density, rank_weights


class RagReasoner:
    """Rank candidate locations of photos from their reference neighbours (and an LLM).

    Args:
        llm: an LLM spec (``local:qwen2.5-1.5b``, ``http://HOST/v1#MODEL``) or ``None`` for
            consensus only.
        neighbour_counts: G3 diversification over nearest-neighbour counts.
        n_far: farthest references shown in each prompt.
        consensus: geo-consensus settings.
        dedupe_km: candidates closer than this to a better one are merged into it.
    """

    def __init__(
        self,
        llm: str | None = None,
        *,
        neighbour_counts: Sequence[int] = (5, 10),
        n_far: int = 5,
        consensus: ConsensusConfig | None = None,
        dedupe_km: float = 1.0,
    ) -> None:
        self.backend = parse_llm_spec(llm, cache=default_cache()) if llm else None
        self.config = ReasonerConfig(
            label=self.backend.label if self.backend else "", neighbour_counts=tuple(neighbour_counts), n_far=n_far
        )
        self.consensus = consensus or ConsensusConfig()
        self.dedupe_km = dedupe_km
        self.n_far = n_far

    def describe(self) -> dict[str, object]:
        return {
            "name": "rag",
            "llm": self.backend.label if self.backend else None,
            "neighbour_counts": list(self.config.neighbour_counts),
            "n_far": self.n_far,
        }

    def rank(
        self,
        image: str,
        near: tuple[NDArray[np.float64], NDArray[np.float32]],
        far: tuple[NDArray[np.float64], NDArray[np.float32]],
        top_k: int,
    ) -> list[tuple[float, float, float]]:
        """``(lat, lon, probability)`` best first for one photo.

        Args:
            image: the photo's name (for the prompt cache and logs).
            near: ``(k, 2)`` degrees and ``(k,)`` cosine similarities of the nearest references.
            far: the same for the farthest references (most dissimilar first).
            top_k: how many distinct locations to return.
        """
        nearest = [
            Candidate(float(a), float(b), float(s), SOURCE_NEAREST, r)
            for r, ((a, b), s) in enumerate(zip(*near, strict=True))
        ]
        farthest = [
            Candidate(float(a), float(b), float(s), SOURCE_FARTHEST, r)
            for r, ((a, b), s) in enumerate(zip(*far, strict=True))
        ]
        cset = CandidateSet(image, nearest, farthest)
        llm: list[Candidate] = []
        if self.backend is not None and nearest:
            [answers] = run_reasoner([cset], self.backend, self.config)
            llm = [a.candidate for a in answers if a.candidate is not None]
        pool = sorted(cset.pool(), key=lambda c: c.rank)[: self.consensus.top_k]
        parts = llm + pool  # LLM answers first: on a tie the reasoned answer wins
        if not parts:
            return []
        w = np.concatenate([np.full(len(llm), self.consensus.llm_weight), rank_weights(pool, self.consensus.alpha)])
        xy = coords_of(parts)
        dens = kernel_density(xy, xy, w, self.consensus.bandwidths_km)
        order = np.argsort(-dens, kind="stable")
        d = pairwise_haversine_km(xy, xy)
        chosen: list[int] = []
        for i in order:
            if all(d[i, j] > self.dedupe_km for j in chosen):
                chosen.append(int(i))
            if len(chosen) == top_k:
                break
        total = float(dens[chosen].sum()) or 1.0
        return [(float(xy[i, 0]), float(xy[i, 1]), float(dens[i]) / total) for i in chosen if math.isfinite(dens[i])]
