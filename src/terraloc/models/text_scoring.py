"""Text-aware candidate scoring: add each candidate place's image–text similarity to its score.

For candidates ``coords (N, k, 2)`` with probabilities ``probs (N, k)``, every candidate's place
description (:func:`terraloc.geo.describe.describe_coords`) is embedded with the CLIP text tower
(each distinct description once) and the new score is

    log p + weight · logit_scale · cos(image, text(place))

renormalised over the ``k`` candidates (softmax). ``weight = 0`` leaves the ranking unchanged.
The default weight is 0: choosing it needs real CLIP/StreetCLIP weights and a benchmark, which
this machine does not have (see docs/text.md). :func:`place_name_similarity` checks an LLM
answer's place name against the image the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_TEXT_WEIGHT = 0.0


def candidate_text_embeddings(tower: Any, coords: NDArray[np.float64]) -> NDArray[np.float32]:
    """``(N, k, 2)`` candidates → ``(N, k, D)`` text embeddings of their place descriptions."""
    from terraloc.geo.describe import describe_coords

    c = np.asarray(coords, dtype=np.float64)
    n, k = c.shape[:2]
    flat = c.reshape(-1, 2)
    ok = np.isfinite(flat).all(axis=1)
    out = np.zeros((n * k, tower.dim), dtype=np.float32)
    if ok.any():
        desc = describe_coords(flat[ok], nearby=0).column("description").to_pylist()
        uniq, inv = np.unique(np.asarray(desc, dtype=object), return_inverse=True)
        out[ok] = tower.embed([str(u) for u in uniq])[inv]
    return out.reshape(n, k, tower.dim)


def rescore_with_text(
    probs: NDArray[np.float64],
    image_embeddings: NDArray[np.float32],
    text_embeddings: NDArray[np.float32],
    weight: float = DEFAULT_TEXT_WEIGHT,
    logit_scale: float = 100.0,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """New probabilities ``(N, k)`` and the new order ``(N, k)`` (indices into the old candidates).

    Args:
        probs: ``(N, k)`` head probabilities (``0`` = padding, kept last).
        image_embeddings: ``(N, D)`` L2-normalised; text_embeddings: ``(N, k, D)`` L2-normalised.
    """
    p = np.asarray(probs, dtype=np.float64)
    sim = np.einsum("nd,nkd->nk", np.asarray(image_embeddings, np.float64), np.asarray(text_embeddings, np.float64))
    with np.errstate(divide="ignore"):
        score = np.log(p) + weight * logit_scale * sim
    score = np.where(p > 0, score, -np.inf)
    m = np.max(score, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(score - m)
    new = e / np.maximum(e.sum(axis=1, keepdims=True), 1e-300)
    order = np.argsort(-new, axis=1, kind="stable")
    return np.take_along_axis(new, order, axis=1), order


def place_name_similarity(tower: Any, image_embeddings: NDArray[np.float32], names: list[str]) -> NDArray[np.float64]:
    """Cosine of each image ``(N, D)`` with the prompt ensemble of its place name (one name per image)."""
    t = tower.embed_prompts(names)
    return np.einsum("nd,nd->n", np.asarray(image_embeddings, np.float64), t.astype(np.float64))  # type: ignore[no-any-return]
