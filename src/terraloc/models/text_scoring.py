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


class CandidateTextCache:
    """Text embeddings of candidate places, each distinct description embedded once per process.

    ``embeddings(coords (N, k, 2)) → (N, k, D)``; this is the text embedding a GPS gallery carries
    per point (its place description), computed lazily for the points that become candidates.
    """

    def __init__(self, tower: Any) -> None:
        self.tower = tower
        self._cache: dict[str, NDArray[np.float32]] = {}

    def embeddings(self, coords: NDArray[np.float64]) -> NDArray[np.float32]:
        from terraloc.geo.describe import describe_coords

        c = np.asarray(coords, dtype=np.float64)
        n, k = c.shape[:2]
        flat = c.reshape(-1, 2)
        ok = np.isfinite(flat).all(axis=1)
        out = np.zeros((n * k, self.tower.dim), dtype=np.float32)
        if ok.any():
            desc = [str(d) for d in describe_coords(flat[ok], nearby=0).column("description").to_pylist()]
            todo = sorted({d for d in desc if d not in self._cache})
            if todo:
                for d, e in zip(todo, self.tower.embed(todo), strict=True):
                    self._cache[d] = e
            out[ok] = np.stack([self._cache[d] for d in desc])
        return out.reshape(n, k, self.tower.dim)


class TextRescoredHead:
    """``<inner>+text``: any registered head's candidates rescored by image–place-text similarity.

    Head options: ``inner`` (default ``"geoclip"``), ``text_weight`` (default
    :data:`DEFAULT_TEXT_WEIGHT`), plus the inner head's own. The image embedding is the backbone's
    L2-normalised CLIP feature, so the backbone must be a CLIP checkpoint with a text tower.
    """

    name = "geoclip+text"
    input = "features"
    supports_ten_crop = False

    def __init__(self, inner: Any, tower: Any, weight: float) -> None:
        if getattr(inner, "input", "features") != "features":
            raise ValueError("text rescoring needs a head that takes backbone features")
        self.inner = inner
        self.tower = tower
        self.weight = float(weight)
        self.texts = CandidateTextCache(tower)
        self.input_dim = getattr(inner, "input_dim", None)
        self.required_backbone = getattr(inner, "required_backbone", None)

    @classmethod
    def from_config(cls, config: Any, backbone: Any, progress: Any = None) -> TextRescoredHead:
        from types import SimpleNamespace

        from terraloc.errors import InputError
        from terraloc.models.head import head_class
        from terraloc.models.text_head import text_tower_for

        opts = dict(getattr(config, "head_options", None) or {})
        inner_name = str(opts.pop("inner", "geoclip"))
        weight = float(opts.pop("text_weight", DEFAULT_TEXT_WEIGHT))
        if not np.isfinite(weight) or weight < 0:
            raise InputError(f"text_weight must be a non-negative number, got {weight}", field="head_options")
        if hasattr(config, "model_copy"):  # the pipeline's validated GeolocatorConfig
            inner_cfg = config.model_copy(update={"head": inner_name, "head_options": opts})
        else:
            inner_cfg = SimpleNamespace(**{**vars(config), "head": inner_name, "head_options": opts})
        inner_cls = head_class(inner_name)
        import inspect

        if "progress" in inspect.signature(inner_cls.from_config).parameters:
            inner = inner_cls.from_config(inner_cfg, backbone, progress=progress)
        else:
            inner = inner_cls.from_config(inner_cfg, backbone)
        return cls(inner, text_tower_for(backbone), weight)

    def transform(self, preprocess: Any) -> Any:
        return preprocess

    def predict(self, x: Any, top_k: int) -> Any:
        import torch

        from terraloc.models.head import Candidates

        cands = self.inner.predict(x, top_k)
        if self.weight == 0:
            return cands
        f = torch.nn.functional.normalize(torch.as_tensor(x).float(), dim=-1).numpy()
        text = self.texts.embeddings(cands.coords)
        probs, order = rescore_with_text(cands.probs, f, text, self.weight, self.tower.logit_scale)
        coords = np.take_along_axis(cands.coords, order[:, :, None], axis=1)
        evidence = [[{**cands.evidence[i][int(j)], "text_rescored": True} for j in order[i]] for i in range(cands.n)]
        return Candidates(coords, probs, evidence)

    def describe(self) -> dict[str, Any]:
        info = dict(self.inner.describe()) if hasattr(self.inner, "describe") else {}
        return {**info, "text_weight": self.weight}

    def files(self) -> dict[str, str]:
        return dict(self.inner.files()) if hasattr(self.inner, "files") else {}
