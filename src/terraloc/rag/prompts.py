"""Prompts for LLM geolocation (zero-shot and retrieval-augmented) and G3-style diversification.

The texts live in ``terraloc/data/prompts/geolocation.json`` (``string.Template`` syntax) and the
answer's JSON schema in ``answer_schema.json``; this module only fills them in.

* zero-shot: the photo alone (only meaningful for a backend that sees the photo);
* RAG (Img2Loc): the coordinates and place names (offline reverse geocoding) of the ``k``
  nearest references (positive evidence) and of the ``m`` farthest ones (negative evidence);
* G3 diversification: one prompt per neighbour count (``0, 5, 10, 15`` by default) and several
  samples of each; every answer becomes a candidate for selection.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from string import Template
from typing import Any

from terraloc.config import package_data
from terraloc.rag.candidates import Candidate, CandidateSet

#: G3 diversification: one prompt per nearest-neighbour count. The one default of ``rag eval`` and
#: ``predict --reasoner rag``; add ``0`` for a zero-shot prompt (multimodal backends only).
DEFAULT_NEIGHBOUR_COUNTS: tuple[int, ...] = (5, 10, 15)


@lru_cache(maxsize=1)
def templates() -> dict[str, str]:
    """The prompt templates (``geolocation.json``)."""
    data: dict[str, str] = json.loads(package_data("prompts", "geolocation.json").read_text(encoding="utf-8"))
    return data


@lru_cache(maxsize=1)
def answer_schema() -> dict[str, Any]:
    """JSON schema of the answer ``{"lat": number, "lon": number, "reason": string}``."""
    schema: dict[str, Any] = json.loads(package_data("prompts", "answer_schema.json").read_text(encoding="utf-8"))
    return schema


class PlaceNamer:
    """Offline reverse geocoding to ``"city, region, CC"`` (GeoNames cities > 1000 people).

    Uses ``terraloc.geo.places`` when present, else the ``reverse_geocoder`` package directly.
    The geocoder loads once (about a second) on first use.
    """

    def __init__(self) -> None:
        self._rg: Any = None

    def names(self, coords: Sequence[tuple[float, float]]) -> list[str]:
        """Place names for ``(lat, lon)`` degrees (``""`` for none)."""
        if not coords:
            return []
        if self._rg is None:
            import reverse_geocoder

            self._rg = reverse_geocoder.RGeocoder(mode=1, verbose=False)
        rows = self._rg.query([(float(a), float(b)) for a, b in coords])
        tpl = Template(templates()["place"])
        return [tpl.substitute(name=r["name"], admin1=r["admin1"] or "-", cc=r["cc"]) for r in rows]


_NAMER = PlaceNamer()


def place_names(coords: Sequence[tuple[float, float]]) -> list[str]:
    """Module-level :class:`PlaceNamer` shortcut."""
    return _NAMER.names(coords)


@dataclass(frozen=True)
class Prompt:
    """One chat request's content.

    Attributes:
        system: the system message.
        user: the user message text.
        n_near: nearest references shown; n_far: farthest references shown.
        with_image: whether the photo is to be attached.
        sample: the sample index (G3 draws several samples of each prompt).
    """

    system: str
    user: str
    n_near: int
    n_far: int
    with_image: bool
    sample: int = 0
    tag: str = field(default="")

    def messages(self, image_part: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """OpenAI chat messages; ``image_part`` is attached when given and the prompt wants it."""
        if self.with_image and image_part is not None:
            content: Any = [{"type": "text", "text": self.user}, image_part]
        else:
            content = self.user
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content}]


def _lines(cands: Sequence[Candidate], with_places: bool) -> str:
    names = place_names([c.latlon for c in cands]) if with_places else [""] * len(cands)
    tpl = Template(templates()["neighbour_line"])
    return "\n".join(
        tpl.substitute(i=i + 1, lat=f"{c.lat:.4f}", lon=f"{c.lon:.4f}", place=name).rstrip()
        for i, (c, name) in enumerate(zip(cands, names, strict=True))
    )


def build_prompt(
    cset: CandidateSet,
    n_near: int,
    n_far: int | None = None,
    *,
    with_image: bool = False,
    with_places: bool = True,
    sample: int = 0,
) -> Prompt:
    """The zero-shot (``n_near == 0``) or RAG prompt for one photo.

    Args:
        cset: the photo's candidates (nearest first; farthest most dissimilar first).
        n_near: nearest references to show.
        n_far: farthest references to show (default: as many as ``n_near``).
        with_image: the backend sees the photo (multimodal) — chooses the ``*_image`` texts.
        with_places: add offline reverse-geocoded place names to each coordinate.
        sample: sample index, recorded in the prompt (and so in the request cache key).
    """
    t = templates()
    n_far = n_near if n_far is None else n_far
    near = cset.nearest[:n_near]
    far = cset.farthest[:n_far]
    if not near:
        user = t["zero_shot_image"]
        n_far_used = 0
    else:
        far_block = (
            Template(t["farthest_block"]).substitute(n_far=len(far), farthest=_lines(far, with_places)) if far else ""
        )
        user = Template(t["rag_image" if with_image else "rag_text"]).substitute(
            n_near=len(near), nearest=_lines(near, with_places), farthest_block=far_block
        )
        n_far_used = len(far)
    return Prompt(t["system"], user, len(near), n_far_used, with_image, sample, f"k{len(near)}-s{sample}")


def diversified_prompts(
    cset: CandidateSet,
    neighbour_counts: Sequence[int] = DEFAULT_NEIGHBOUR_COUNTS,
    samples: int = 1,
    *,
    n_far: int | None = None,
    with_image: bool = False,
    with_places: bool = True,
) -> list[Prompt]:
    """G3-style diversification: one prompt per neighbour count, ``samples`` samples of each.

    A text-only backend cannot answer the zero-shot prompt (it sees neither photo nor
    neighbours), so ``0`` is skipped when ``with_image`` is False.
    """
    out = []
    for k in neighbour_counts:
        if k == 0 and not with_image:
            continue
        for s in range(samples):
            out.append(build_prompt(cset, k, n_far, with_image=with_image, with_places=with_places, sample=s))
    return out


def answer_to_candidate(lat: float, lon: float, rank: int, config: str) -> Candidate | None:
    """An LLM answer as a :class:`Candidate` (``source="llm:<config>"``), ``None`` if invalid."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    return Candidate(lat, lon, math.nan, f"llm:{config}", rank)
