"""Candidate locations and the one interface every candidate source implements.

A *candidate* is a location some stage proposes for a photo: a reference photo's GPS among the
nearest (or farthest) neighbours, a GPS-gallery entry of GeoCLIP, a geocell centre, or an LLM's
answer. Selection (:mod:`terraloc.rag.select`) chooses among them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

# Source names used across terraloc (free text is allowed; these are the conventional ones).
SOURCE_NEAREST = "refdb-nearest"
SOURCE_FARTHEST = "refdb-farthest"
SOURCE_GALLERY = "gps-gallery"
SOURCE_GEOCELL = "geocell"
SOURCE_LLM = "llm"


@dataclass(frozen=True)
class Candidate:
    """One proposed location.

    Attributes:
        lat: latitude in degrees, ``[-90, 90]``.
        lon: longitude in degrees, ``[-180, 180]``.
        score: the source's own score (cosine similarity for retrieval, probability for a
            gallery or geocell classifier); ``nan`` when the source gives none (e.g. a
            candidates file that lists coordinates only).
        source: where the candidate came from (``refdb-nearest``, ``gps-gallery``, ``llm``, ...).
        rank: 0-based rank within its source (0 = the source's best).
    """

    lat: float
    lon: float
    score: float = math.nan
    source: str = ""
    rank: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and math.isfinite(self.lon)):
            raise ValueError(f"candidate coordinates must be finite, got ({self.lat}, {self.lon})")
        if abs(self.lat) > 90 or abs(self.lon) > 180:
            raise ValueError(f"candidate ({self.lat}, {self.lon}) is outside [-90, 90] x [-180, 180]")
        if self.rank < 0:
            raise ValueError(f"candidate rank must be >= 0, got {self.rank}")

    @property
    def latlon(self) -> tuple[float, float]:
        """``(lat, lon)`` in degrees."""
        return (self.lat, self.lon)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``score`` is ``null`` when unknown)."""
        d = asdict(self)
        if not math.isfinite(self.score):
            d["score"] = None
        return d


def coords_of(candidates: Sequence[Candidate]) -> NDArray[np.float64]:
    """``(N, 2)`` ``(lat, lon)`` degrees of ``candidates`` (``(0, 2)`` when empty)."""
    if not candidates:
        return np.zeros((0, 2), dtype=np.float64)
    return np.array([c.latlon for c in candidates], dtype=np.float64)


def from_coords(
    coords: NDArray[np.float64] | Sequence[Sequence[float]],
    source: str,
    scores: Sequence[float] | NDArray[np.floating] | None = None,
) -> list[Candidate]:
    """Candidates from ``(N, 2)`` degrees in rank order, with optional ``(N,)`` scores."""
    arr = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    sc = [math.nan] * len(arr) if scores is None else [float(s) for s in scores]
    return [
        Candidate(float(lat), float(lon), s, source, i) for i, ((lat, lon), s) in enumerate(zip(arr, sc, strict=True))
    ]


@dataclass
class CandidateSet:
    """Everything retrieval proposes for one photo, in the shape Img2Loc and G3 use.

    Attributes:
        image: the photo's id (file name).
        nearest: candidates from the most similar references, best first.
        farthest: locations of the least similar references (negative evidence for prompts),
            most dissimilar first.
        extra: candidates from further sources (gallery top-k, geocells, ...), each with its
            own ``source`` and ``rank``.
        truth: ``(lat, lon)`` ground truth when known (benchmarks), else ``None``.
        line: the line of the file the set was read from, if any.
    """

    image: str
    nearest: list[Candidate]
    farthest: list[Candidate] = field(default_factory=list)
    extra: list[Candidate] = field(default_factory=list)
    truth: tuple[float, float] | None = None
    line: int | None = None

    def pool(self) -> list[Candidate]:
        """All positive candidates (nearest and extra sources; not the farthest ones)."""
        return [*self.nearest, *self.extra]


@runtime_checkable
class CandidateSource(Protocol):
    """Anything that proposes ranked candidate locations for a batch of query embeddings.

    Implementations: :class:`EmbeddingCandidateSource` (a GPS gallery or a reference-photo
    database held as arrays), the reference database of :mod:`terraloc.search.refdb`
    (through :class:`ReferenceDatabaseSource`), and the G3 candidates file
    (:mod:`terraloc.rag.candidates_file`, which reads precomputed candidates).
    """

    name: str

    def candidates(self, queries: NDArray[np.float32], k: int) -> list[list[Candidate]]:
        """Top-``k`` candidates for each of the ``(Q, D)`` L2-normalised query embeddings."""
        ...


class EmbeddingCandidateSource:
    """Top-k by cosine similarity against ``(N, D)`` L2-normalised embeddings with ``(N, 2)`` coords.

    This is GeoCLIP's GPS-gallery search (embeddings = location-encoder outputs of the gallery)
    and Img2Loc's reference-photo kNN (embeddings = image embeddings of the references).
    With ``farthest=True`` it returns the k *least* similar entries (nearest to the negated
    query), as Img2Loc and G3 do for negative examples.

    Args:
        coords: ``(N, 2)`` degrees.
        embeddings: ``(N, D)`` L2-normalised vectors in the same space as the queries.
        name: the ``source`` given to the candidates.
        farthest: return the least similar entries instead of the most similar.
    """

    def __init__(
        self,
        coords: NDArray[np.float64],
        embeddings: NDArray[np.floating],
        name: str = SOURCE_GALLERY,
        farthest: bool = False,
    ) -> None:
        self.coords = np.asarray(coords, dtype=np.float64)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        if self.coords.ndim != 2 or self.coords.shape[1] != 2:
            raise ValueError(f"coords must be (N, 2), got {self.coords.shape}")
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.coords):
            raise ValueError(f"embeddings must be (N, D) with N = {len(self.coords)}, got {self.embeddings.shape}")
        self.name = name
        self.farthest = farthest

    def candidates(self, queries: NDArray[np.float32], k: int) -> list[list[Candidate]]:
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.embeddings.shape[1])
        sims = q @ self.embeddings.T  # (Q, N) cosine similarities
        k = min(k, sims.shape[1])
        order_key = sims if self.farthest else -sims
        idx = np.argsort(order_key, axis=1, kind="stable")[:, :k]
        out = []
        for qi in range(len(q)):
            out.append(
                [
                    Candidate(float(self.coords[j, 0]), float(self.coords[j, 1]), float(sims[qi, j]), self.name, r)
                    for r, j in enumerate(idx[qi])
                ]
            )
        return out


class ReferenceDatabaseSource:
    """Adapter for a reference-photo database with ``.search(queries, k)`` / ``.farthest(queries, k)``.

    The database (``terraloc.search.refdb.ReferenceDatabase``) returns ``(scores, indices)``, each
    ``(Q, k)`` (or a result with those attributes) and exposes ``coords`` ``(N, 2)``; this adapter
    turns those into candidates.
    """

    def __init__(self, db: Any, farthest: bool = False) -> None:
        self.db = db
        self.farthest = farthest
        self.name = SOURCE_FARTHEST if farthest else SOURCE_NEAREST

    def candidates(self, queries: NDArray[np.float32], k: int) -> list[list[Candidate]]:
        res = self.db.farthest(queries, k) if self.farthest else self.db.search(queries, k)
        all_scores, all_idx = (res.scores, res.indices) if hasattr(res, "scores") else res
        coords = np.asarray(self.db.coords, dtype=np.float64)
        out: list[list[Candidate]] = []
        for scores, idx in zip(np.asarray(all_scores), np.asarray(all_idx), strict=True):
            row = []
            for r, (s, j) in enumerate(zip(scores, idx, strict=True)):
                if j < 0:  # FAISS pads missing results with -1
                    continue
                row.append(Candidate(float(coords[j, 0]), float(coords[j, 1]), float(s), self.name, r))
            out.append(row)
        return out
