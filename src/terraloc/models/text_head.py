"""Zero-shot place head (``text``): CLIP image embedding vs text embeddings of a place hierarchy.

StreetCLIP-style zero-shot geolocation: each node of a :class:`~terraloc.geo.place_hierarchy.
PlaceHierarchy` (country → admin1 → city) is a prompt-ensemble text embedding
(:meth:`terraloc.encoders.text.TextTower.embed_prompts`); a photo's L2-normalised image embedding
``(D,)`` scores every node by ``logit_scale · cosine``.

Probabilities are a hierarchical softmax: ``p(country)`` is a softmax over all countries,
``p(admin1 | country)`` a softmax over that country's admin1 nodes, ``p(city | admin1)`` over
that region's cities; a leaf's probability is the product along its path (so the leaves' sum is
1). The search is coarse to fine with a beam per level (as the hierarchical gallery does): only
the children of the ``beam[l]`` most probable nodes of level ``l`` are scored. Because every
expanded node's children are scored completely, each returned probability is exact; with beams
that cover every node the result equals :func:`exhaustive_search`.

Text embeddings of the hierarchy are cached on disk (``TERRALOC_HOME/text/``), keyed by the
backbone's weight hash, the templates and the hierarchy's fingerprint; written atomically, with a
progress callback while they are computed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray

from terraloc.errors import InputError
from terraloc.geo.place_hierarchy import PlaceHierarchy

ProgressFn = Callable[[str, int, int], None]

#: Beam widths per level below the top (countries kept, admin1 regions kept).
DEFAULT_BEAM: tuple[int, ...] = (5, 10)


@dataclass(frozen=True)
class PlaceMatch:
    """Search result for ``N`` images, ``k`` leaves each.

    Attributes:
        nodes: ``(N, k)`` int64 leaf rows (deepest level), best first (``-1`` padding).
        probs: ``(N, k)`` float64 hierarchical probabilities (``0`` padding).
        paths: ``(N, k, L)`` int64 node row per level, coarse to fine.
    """

    nodes: NDArray[np.int64]
    probs: NDArray[np.float64]
    paths: NDArray[np.int64]


def _log_softmax(x: NDArray[np.float64]) -> NDArray[np.float64]:
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())  # type: ignore[no-any-return]


def _children_logp(
    level: Any, emb: NDArray[np.float32], img: NDArray[np.float64], parents: NDArray[np.int64], scale: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """For each parent node: its children rows, their parent position and ``log p(child | parent)``."""
    rows, owner, logp = [], [], []
    for j, p in enumerate(parents):
        a, b = int(level.offsets[p]), int(level.offsets[p + 1])
        if b <= a:
            continue
        lg = scale * (emb[a:b].astype(np.float64) @ img)
        rows.append(np.arange(a, b))
        owner.append(np.full(b - a, j))
        logp.append(_log_softmax(lg))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(rows), np.concatenate(owner), np.concatenate(logp)


def beam_search(
    hierarchy: PlaceHierarchy,
    embeddings: Sequence[NDArray[np.float32]],
    images: NDArray[np.float32],
    top_k: int,
    beam: Sequence[int] = DEFAULT_BEAM,
    logit_scale: float = 100.0,
) -> PlaceMatch:
    """Coarse-to-fine search for ``(N, D)`` L2-normalised image embeddings.

    Args:
        embeddings: per level ``(M_l, D)`` L2-normalised text embeddings (same order as the levels).
        beam: nodes kept on each level but the last (``beam[l]`` for level ``l``); a beam at least
            the level's size keeps everything.
        logit_scale: multiplier of the cosine similarities (the checkpoint's ``exp(logit_scale)``).
    """
    levels = hierarchy.levels
    if len(embeddings) != len(levels):
        raise InputError(f"{len(embeddings)} embedding arrays for {len(levels)} levels", field="embeddings")
    if len(beam) < len(levels) - 1 or any(b < 1 for b in beam[: len(levels) - 1]):
        raise InputError(f"need a beam of at least 1 for each of the top {len(levels) - 1} level(s)", field="beam")
    if top_k < 1:
        raise InputError(f"top-k must be at least 1, got {top_k}", field="top_k")
    x = np.asarray(images, dtype=np.float64)
    n, n_lv = len(x), len(levels)
    nodes = np.full((n, top_k), -1, dtype=np.int64)
    probs = np.zeros((n, top_k))
    paths = np.full((n, top_k, n_lv), -1, dtype=np.int64)
    for i in range(n):
        img = x[i]
        cur = np.arange(len(levels[0]))
        cur_logp = _log_softmax(logit_scale * (embeddings[0].astype(np.float64) @ img))
        hist = cur[:, None]
        for lv in range(1, n_lv):
            keep = np.argsort(-cur_logp, kind="stable")[: beam[lv - 1]]
            rows, owner, logp = _children_logp(levels[lv], embeddings[lv], img, cur[keep], logit_scale)
            cur_logp = cur_logp[keep][owner] + logp
            hist = np.concatenate([hist[keep][owner], rows[:, None]], axis=1)
            cur = rows
        order = np.argsort(-cur_logp, kind="stable")[:top_k]
        m = len(order)
        nodes[i, :m] = cur[order]
        probs[i, :m] = np.exp(cur_logp[order])
        paths[i, :m] = hist[order]
    return PlaceMatch(nodes, probs, paths)


def exhaustive_search(
    hierarchy: PlaceHierarchy,
    embeddings: Sequence[NDArray[np.float32]],
    images: NDArray[np.float32],
    top_k: int,
    logit_scale: float = 100.0,
) -> PlaceMatch:
    """Every leaf's hierarchical probability computed level by level, without pruning; then top-k."""
    levels = hierarchy.levels
    x = np.asarray(images, dtype=np.float64)
    n = len(x)
    nodes = np.full((n, top_k), -1, dtype=np.int64)
    probs = np.zeros((n, top_k))
    paths = np.full((n, top_k, len(levels)), -1, dtype=np.int64)
    for i in range(n):
        logp = _log_softmax(logit_scale * (embeddings[0].astype(np.float64) @ x[i]))
        parent_chain = [np.arange(len(levels[0]))]
        for lv in range(1, len(levels)):
            level = levels[lv]
            lg = logit_scale * (embeddings[lv].astype(np.float64) @ x[i])
            cond = np.empty(len(level))
            for p in range(len(levels[lv - 1])):
                a, b = int(level.offsets[p]), int(level.offsets[p + 1])
                if b > a:
                    cond[a:b] = _log_softmax(lg[a:b])
            logp = logp[level.parent] + cond
            parent_chain.append(level.parent)
        order = np.argsort(-logp, kind="stable")[:top_k]
        m = len(order)
        nodes[i, :m] = order
        probs[i, :m] = np.exp(logp[order])
        # walk up the parents for the paths
        node = order.copy()
        for lv in range(len(levels) - 1, -1, -1):
            paths[i, :m, lv] = node
            if lv > 0:
                node = levels[lv].parent[node]
    return PlaceMatch(nodes, probs, paths)


# --------------------------------------------------------------------------- text embeddings cache


def text_cache_dir() -> Path:
    from terraloc.config import home_dir

    return home_dir() / "text"


def hierarchy_embeddings(
    tower: Any,
    hierarchy: PlaceHierarchy,
    templates: Sequence[str],
    backbone_key: str,
    cache_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    city_templates: int = 1,
) -> list[NDArray[np.float32]]:
    """Prompt-ensemble embeddings of every level, cached on disk.

    The city level (144,000 nodes for all of GeoNames) uses only the first ``city_templates``
    templates, the coarser levels all of them.

    Args:
        tower: a :class:`terraloc.encoders.text.TextTower`.
        backbone_key: identifies the weights (``backbone.weights_hash``, else its id).
        progress: ``progress(level_name, done, total)`` while a level is embedded.

    Returns:
        Per level ``(M_l, D)`` L2-normalised float32.
    """
    from terraloc.io import atomic_write

    folder = Path(cache_dir) if cache_dir is not None else text_cache_dir()
    out = []
    for lv in hierarchy.levels:
        level_templates = list(templates)[: max(1, city_templates)] if lv.name == "city" else list(templates)
        ident = json.dumps(
            {
                "backbone": backbone_key,
                "templates": level_templates,
                "hierarchy": hierarchy.fingerprint(),
                "level": lv.name,
            }
        )
        key = hashlib.sha256(ident.encode()).hexdigest()[:20]
        path = folder / f"places-{lv.name}-{key}.npy"
        if path.exists():
            try:
                arr = np.load(path, allow_pickle=False)
                if arr.shape == (len(lv), tower.dim):
                    out.append(arr.astype(np.float32, copy=False))
                    continue
            except (OSError, ValueError):
                pass  # damaged cache file: recompute
        name = lv.name

        def report(done: int, total: int, _name: str = name) -> None:
            if progress is not None:
                progress(_name, done, total)

        emb = tower.embed_prompts(lv.text, level_templates, progress=report)
        with atomic_write(path, "wb") as fh:
            np.save(fh, emb, allow_pickle=False)
        out.append(emb)
    return out


# --------------------------------------------------------------------------- the head


def text_tower_for(backbone: Any) -> Any:
    """The backbone's text tower; loads it from the backbone's checkpoint when it was dropped.

    Raises:
        InputError: the backbone is not a full CLIP checkpoint with a tokenizer.
    """
    tower = getattr(backbone, "text", None)
    if tower is not None:
        return tower
    model_id = getattr(backbone, "model_id", "")
    if not model_id or getattr(backbone, "visual_projection", None) is None:
        raise InputError(
            f"the text head needs a CLIP-family backbone with a text tower, not '{model_id or backbone}'",
            field="backbone",
        )
    from terraloc.encoders.image.backbones import load_backbone

    full: Any = load_backbone(model_id, text=True)
    if full.weights_hash != getattr(backbone, "weights_hash", full.weights_hash):
        raise InputError(f"the checkpoint at '{model_id}' changed while loading its text tower", field="backbone")
    backbone.text = full.text
    return full.text


class TextPlaceHead:
    """The ``text`` head: zero-shot places for backbone features (see the module docstring).

    Options (``head_options`` / constructor): ``levels`` (1-3, default 3), ``beam`` (per level,
    default ``(5, 10)``), ``countries`` (ISO codes to restrict the hierarchy, default all),
    ``templates`` (prompt templates with ``{}``).
    """

    name: ClassVar[str] = "text"
    input: ClassVar[str] = "features"
    supports_ten_crop: ClassVar[bool] = False

    def __init__(
        self,
        backbone: Any,
        levels: int = 3,
        beam: Sequence[int] = DEFAULT_BEAM,
        countries: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        hierarchy: PlaceHierarchy | None = None,
        embeddings: Sequence[NDArray[np.float32]] | None = None,
        logit_scale: float | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        from terraloc.encoders.text import PLACE_TEMPLATES

        self.templates = tuple(templates or PLACE_TEMPLATES)
        self.hierarchy = hierarchy or PlaceHierarchy.from_geonames(levels, countries)
        self.beam = tuple(int(b) for b in beam)
        self.input_dim: int | None = int(backbone.dim) if backbone is not None else None
        self.required_backbone: dict[str, Any] | None = None
        self.backbone_info = backbone.describe() if backbone is not None else {}
        if embeddings is None:
            tower = text_tower_for(backbone)
            key = backbone.weights_hash or backbone.model_id
            embeddings = hierarchy_embeddings(tower, self.hierarchy, self.templates, key, progress=progress)
            scale = tower.logit_scale if logit_scale is None else logit_scale
        else:
            scale = 100.0 if logit_scale is None else logit_scale
        self.embeddings = [np.asarray(e, dtype=np.float32) for e in embeddings]
        self.logit_scale = float(scale)
        if self.input_dim is not None and self.embeddings[0].shape[1] != self.input_dim:
            raise InputError(
                f"text embeddings are {self.embeddings[0].shape[1]}-d but the image features {self.input_dim}-d",
                field="backbone",
            )

    @classmethod
    def from_config(cls, config: Any, backbone: Any, progress: ProgressFn | None = None) -> TextPlaceHead:
        opts = dict(getattr(config, "head_options", None) or {})
        known = {"levels", "beam", "countries", "templates"}
        unknown = set(opts) - known
        if unknown:
            raise InputError(
                f"unknown text-head option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}",
                field="head_options",
            )
        beam = opts.get("beam", DEFAULT_BEAM)
        try:
            if isinstance(beam, str):
                beam = [int(b) for b in beam.split(",") if b.strip()]
            beam = [int(b) for b in beam]
            levels = int(opts.get("levels", 3))
        except (TypeError, ValueError):
            raise InputError(
                f"text-head options: levels must be 1-3 and beam comma-separated integers, got {opts}",
                field="head_options",
            ) from None
        if len(beam) == 1:
            beam = beam * 2
        countries = opts.get("countries")
        if isinstance(countries, str):
            countries = [c.strip() for c in countries.split(",") if c.strip()]
        return cls(backbone, levels, beam, countries, opts.get("templates"), progress=progress)

    def transform(self, preprocess: Any) -> Any:
        return preprocess

    def search(self, image_embeddings: NDArray[np.float32], top_k: int) -> PlaceMatch:
        """``(N, D)`` L2-normalised image embeddings → :class:`PlaceMatch`."""
        return beam_search(self.hierarchy, self.embeddings, image_embeddings, top_k, self.beam, self.logit_scale)

    def predict_arrays(
        self, features: NDArray[np.float32] | torch.Tensor, top_k: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], list[list[dict[str, Any]]]]:
        """``(N, D)`` backbone features → coords ``(N, k, 2)``, probs ``(N, k)``, evidence per candidate."""
        f = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if f.ndim != 2:
            raise InputError(f"the text head takes (N, D) features, got shape {tuple(f.shape)}", field="features")
        emb = torch.nn.functional.normalize(f, dim=-1).numpy()
        m = self.search(emb, top_k)
        deepest = self.hierarchy.levels[-1]
        coords = np.full((len(emb), top_k, 2), np.nan)
        evidence: list[list[dict[str, Any]]] = []
        for i in range(len(emb)):
            row: list[dict[str, Any]] = []
            for j in range(top_k):
                node = int(m.nodes[i, j])
                if node < 0:
                    row.append({})
                    continue
                coords[i, j] = deepest.coords[node]
                row.append(
                    {
                        "place": deepest.text[node],
                        "level": deepest.name,
                        "country_code": deepest.country_code[node],
                        "path": [
                            self.hierarchy.levels[lv].text[int(m.paths[i, j, lv])] for lv in range(m.paths.shape[2])
                        ],
                    }
                )
            evidence.append(row)
        return coords, m.probs, evidence

    def predict(self, x: Any, top_k: int) -> Any:
        """Backbone features ``(N, D)`` → ``terraloc.models.head.Candidates`` (plain tuple if absent)."""
        coords, probs, evidence = self.predict_arrays(x.detach().cpu().numpy() if torch.is_tensor(x) else x, top_k)
        try:
            from terraloc.models.head import Candidates
        except ImportError:  # the head registry has not landed: plain arrays
            return coords, probs, evidence
        return Candidates(coords, probs, evidence)

    def describe(self) -> dict[str, Any]:
        return {
            "text": {
                "levels": [lv.name for lv in self.hierarchy.levels],
                "sizes": self.hierarchy.sizes,
                "beam": list(self.beam),
                "templates": list(self.templates),
                "hierarchy": self.hierarchy.fingerprint(),
            }
        }

    def files(self) -> dict[str, str]:
        return {}
