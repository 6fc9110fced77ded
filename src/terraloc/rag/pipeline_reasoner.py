"""The RAG reasoner as a stage after any head (``terraloc predict --reasoner rag``).

For each photo it takes the head's candidates (``(k, 2)`` degrees and ``(k,)`` scores: GeoCLIP's
GPS-gallery top-k, GeoSURGE cells, ...) and, when a reference database is given, its nearest and
farthest references; optionally asks an LLM (G3-diversified prompts, see
:mod:`terraloc.rag.prompts`), and ranks every candidate location by geo-consensus with
:func:`terraloc.rag.select.rank_consensus`, the selection ``rag eval`` measures, with the same
defaults (:class:`~terraloc.rag.select.GeoConsensusConfig`, neighbour counts 5, 10, 15). The
probabilities are the consensus densities of the chosen locations, normalised to sum to 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from terraloc.rag.candidates import SOURCE_FARTHEST, SOURCE_NEAREST, Candidate, CandidateSet, from_coords
from terraloc.rag.prompts import DEFAULT_NEIGHBOUR_COUNTS
from terraloc.rag.reasoner import ReasonerConfig, default_cache, parse_llm_spec, run_reasoner
from terraloc.rag.select import GeoConsensusConfig, rank_consensus

#: ``source`` of candidates handed over by a prediction head
SOURCE_HEAD = "head"

Located = tuple[NDArray[np.float64], NDArray[np.floating]]
"""``(coords (k, 2) degrees, scores (k,))``, best first."""


class RagReasoner:
    """Rank candidate locations of photos from a head's candidates, reference neighbours and an LLM.

    Args:
        llm: an LLM spec (``local:qwen2.5-1.5b``, ``http://HOST/v1#MODEL``) or ``None`` for
            consensus only.
        neighbour_counts: G3 diversification over nearest-neighbour counts (default 5, 10, 15).
        n_far: farthest references shown in each prompt.
        consensus: geo-consensus settings (default :class:`GeoConsensusConfig`, as ``rag eval``).
    """

    def __init__(
        self,
        llm: str | None = None,
        *,
        neighbour_counts: Sequence[int] = DEFAULT_NEIGHBOUR_COUNTS,
        n_far: int = 5,
        consensus: GeoConsensusConfig | None = None,
    ) -> None:
        self.backend = parse_llm_spec(llm, cache=default_cache()) if llm else None
        self.config = ReasonerConfig(
            label=self.backend.label if self.backend else "", neighbour_counts=tuple(neighbour_counts), n_far=n_far
        )
        self.consensus = consensus or GeoConsensusConfig()
        self.n_far = n_far

    def describe(self) -> dict[str, object]:
        return {
            "name": "rag",
            "llm": self.backend.label if self.backend else None,
            "neighbour_counts": list(self.config.neighbour_counts),
            "n_far": self.n_far,
        }

    def candidate_set(
        self, image: str, near: Located | None = None, far: Located | None = None, *, head: Located | None = None
    ) -> CandidateSet:
        """The :class:`CandidateSet` of one photo (what ``rag eval`` reads from a candidates file).

        Args:
            image: the photo's name.
            near: nearest references ``(coords, cosine similarities)``, most similar first.
            far: farthest references, most dissimilar first (negative evidence in prompts).
            head: a head's candidates ``(coords, probabilities)``, best first.
        """
        nearest = from_coords(near[0], SOURCE_NEAREST, near[1]) if near is not None else []
        farthest = from_coords(far[0], SOURCE_FARTHEST, far[1]) if far is not None else []
        extra = []
        if head is not None:
            coords, scores = np.asarray(head[0], dtype=np.float64).reshape(-1, 2), np.asarray(head[1])
            keep = np.isfinite(coords).all(axis=1)  # heads pad missing candidates with NaN
            extra = from_coords(coords[keep], SOURCE_HEAD, scores[keep])
        return CandidateSet(image, nearest, farthest, extra)

    def rank_set(self, cset: CandidateSet, top_k: int) -> list[tuple[float, float, float]]:
        """``(lat, lon, probability)`` best first for one :class:`CandidateSet`."""
        llm: list[Candidate] = []
        if self.backend is not None and cset.pool():
            [answers] = run_reasoner([cset], self.backend, self.config)
            llm = [a.candidate for a in answers if a.candidate is not None]
        ranked = rank_consensus(cset, llm, self.consensus, top_k=top_k)
        total = sum(d for _, d in ranked) or 1.0
        return [(c.lat, c.lon, d / total) for c, d in ranked if math.isfinite(d)]

    def rank(
        self,
        image: str,
        near: Located | None = None,
        far: Located | None = None,
        top_k: int = 5,
        *,
        head: Located | None = None,
    ) -> list[tuple[float, float, float]]:
        """``(lat, lon, probability)`` best first for one photo (see :meth:`candidate_set`)."""
        return self.rank_set(self.candidate_set(image, near, far, head=head), top_k)
