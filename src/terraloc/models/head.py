"""The head contract: every geolocation head maps a batch to one result type, :class:`Candidates`.

A head is a class registered by name (``geoclip``, ``refdb``, ``geosurge``, ``geosurge+fusion``, or
a third party's through the ``terraloc.heads`` entry-point group) that follows the :class:`Head`
protocol::

    head = build_head(config, backbone)        # the ONE place for ten-crop, dimension and backbone checks
    cands = head.predict(head_input, top_k)    # Candidates: coords (N, k, 2), probs (N, k), evidence

``head.input`` says what the pipeline hands to :meth:`Head.predict`:

* ``"features"`` — the backbone's unnormalised features ``backbone.features(pixels)`` as a float32
  tensor ``(N, D)``; with ten-crop (heads whose ``supports_ten_crop`` is true) ``(N, 10, D)``;
* ``"pixels"`` — the batch as produced by ``head.transform(preprocess)`` (heads that need vision
  tokens or extra channels, e.g. semantic fusion), ``(N, C, H, W)``.

A third-party head (a package of its own) registers in its ``pyproject.toml``::

    [project.entry-points."terraloc.heads"]
    myhead = "mypackage.heads:MyHead"

and is then usable as ``terraloc predict --head myhead`` / ``GeolocatorConfig(head="myhead",
head_options={...})``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError

if TYPE_CHECKING:
    import torch
    from PIL import Image

ENTRY_POINT_GROUP = "terraloc.heads"

HeadInput = Literal["features", "pixels"]


# --------------------------------------------------------------------------- result type


@dataclass(frozen=True)
class Candidates:
    """Ranked candidate locations for ``N`` images, ``k`` per image (best first).

    Attributes:
        coords: ``(N, k, 2)`` float64 ``(lat, lon)`` degrees. Rows with fewer than ``k``
            candidates (e.g. the reference-database consensus found fewer clusters) are padded
            with ``NaN``.
        probs: ``(N, k)`` float64 probabilities in ``[0, 1]`` (``0`` in padded slots). What they are
            a probability over is the head's to say (GeoCLIP flat: softmax over the whole gallery;
            approximate indexes: softmax over the retrieved shortlist; GeoSURGE: softmax over the
            leaf cells; reference database: share of the neighbours' similarity weight).
        evidence: per image, per candidate, a JSON-ready dict saying where the candidate came from
            (``{}`` in padded slots). Conventional keys: ``gallery_row`` (GeoCLIP), ``cells``
            (GeoSURGE: cell index per level, coarse to fine), ``references`` (reference database:
            a list of ``{"id", "path", "similarity", "lat", "lon"}``), ``reasoning`` (an LLM's text).
    """

    coords: NDArray[np.float64]
    probs: NDArray[np.float64]
    evidence: list[list[dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        coords = np.asarray(self.coords, dtype=np.float64)
        probs = np.asarray(self.probs, dtype=np.float64)
        if coords.ndim != 3 or coords.shape[2] != 2:
            raise ValueError(f"coords must be (N, k, 2), got shape {coords.shape}")
        if probs.shape != coords.shape[:2]:
            raise ValueError(f"probs must be {coords.shape[:2]} (N, k), got shape {probs.shape}")
        evidence = self.evidence or [[{} for _ in range(coords.shape[1])] for _ in range(coords.shape[0])]
        if len(evidence) != coords.shape[0] or any(len(e) != coords.shape[1] for e in evidence):
            raise ValueError(f"evidence must hold {coords.shape[0]} lists of {coords.shape[1]} dicts")
        object.__setattr__(self, "coords", coords)
        object.__setattr__(self, "probs", probs)
        object.__setattr__(self, "evidence", evidence)

    @property
    def n(self) -> int:
        """Number of images ``N``."""
        return int(self.coords.shape[0])

    @property
    def k(self) -> int:
        """Candidate slots per image (some may be padding)."""
        return int(self.coords.shape[1])

    def __len__(self) -> int:
        return self.n

    def count(self, i: int) -> int:
        """How many real (not padded) candidates image ``i`` has."""
        return int(np.isfinite(self.coords[i, :, 0]).sum())

    def rows(self, i: int) -> list[tuple[float, float, float, dict[str, Any]]]:
        """Image ``i``'s real candidates as ``(lat, lon, probability, evidence)``, best first."""
        return [
            (float(self.coords[i, j, 0]), float(self.coords[i, j, 1]), float(self.probs[i, j]), self.evidence[i][j])
            for j in range(self.k)
            if np.isfinite(self.coords[i, j, 0])
        ]

    def top1(self) -> NDArray[np.float64]:
        """``(N, 2)`` rank-1 coordinates (``NaN`` for an image without candidates)."""
        return self.coords[:, 0, :].copy()

    @classmethod
    def from_rows(
        cls, per_image: Sequence[Sequence[tuple[float, float, float, dict[str, Any]]]], k: int | None = None
    ) -> Candidates:
        """Pad ragged per-image lists of ``(lat, lon, probability, evidence)`` to ``(N, k)``.

        ``k`` defaults to the longest list; longer lists are cut to ``k``.
        """
        width = max((len(r) for r in per_image), default=0) if k is None else k
        n = len(per_image)
        coords = np.full((n, width, 2), np.nan)
        probs = np.zeros((n, width))
        evidence: list[list[dict[str, Any]]] = [[{} for _ in range(width)] for _ in range(n)]
        for i, rows in enumerate(per_image):
            for j, (lat, lon, p, ev) in enumerate(list(rows)[:width]):
                coords[i, j] = (lat, lon)
                probs[i, j] = p
                evidence[i][j] = dict(ev)
        return cls(coords, probs, evidence)

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        """Stack the images of several results (padding to the widest ``k``)."""
        return cls.from_rows([c.rows(i) for c in parts for i in range(c.n)])


# --------------------------------------------------------------------------- the protocol


class HeadConfig(Protocol):
    """What a head may read from the pipeline's configuration (``GeolocatorConfig`` satisfies it)."""

    head: str
    gallery: str
    index: str
    shortlist: int
    db: str | None
    checkpoint: str | None
    fusion: str | None
    segmenter: str
    k_neighbors: int
    temperature: float
    radius_km: float
    ten_crop: bool
    head_options: dict[str, Any]


@runtime_checkable
class Head(Protocol):
    """A geolocation head (see the module docstring).

    Class attributes:
        name: the registry name.
        input: ``"features"`` or ``"pixels"`` (what :meth:`predict` takes).
        supports_ten_crop: whether it accepts ``(N, 10, D)`` ten-crop features.

    Instance attributes (set by the constructor, checked by :func:`build_head`):
        input_dim: backbone feature width the head expects, or ``None`` (pixel heads check
            their own needs).
        required_backbone: ``{"id", "hash", "dim"}`` of the backbone the head's weights or
            database were made with, or ``None`` when any backbone of the right width will do.
    """

    name: ClassVar[str]
    input: ClassVar[HeadInput]
    supports_ten_crop: ClassVar[bool]
    input_dim: int | None
    required_backbone: dict[str, Any] | None

    @classmethod
    def from_config(cls, config: HeadConfig, backbone: Any) -> Head:
        """Build the head for ``backbone`` from the pipeline configuration."""
        ...

    def transform(self, preprocess: Callable[[Image.Image], NDArray[np.float32]]) -> Callable[[Any], Any]:
        """Per-image function for the pipeline's batching (usually ``preprocess`` itself)."""
        ...

    def predict(self, x: torch.Tensor, top_k: int) -> Candidates:
        """A batch (see ``input``) → :class:`Candidates` with ``k <= top_k``."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts recorded with every prediction (``model`` in the result JSON)."""
        ...

    def files(self) -> dict[str, str]:
        """The weight and data files the head reads (``{role: path}``), for saved configurations."""
        ...


class BaseHead:
    """Defaults for the optional parts of :class:`Head` (subclass it or not)."""

    name: ClassVar[str] = ""
    input: ClassVar[HeadInput] = "features"
    supports_ten_crop: ClassVar[bool] = False
    input_dim: int | None = None
    required_backbone: dict[str, Any] | None = None

    def transform(self, preprocess: Callable[[Image.Image], NDArray[np.float32]]) -> Callable[[Any], Any]:
        return preprocess

    def describe(self) -> dict[str, Any]:
        return {}

    def files(self) -> dict[str, str]:
        return {}


# --------------------------------------------------------------------------- registry

#: built-in heads, imported on first use (so listing heads does not import torch models)
BUILTIN_HEADS: dict[str, str] = {
    "geoclip": "terraloc.models.geoclip:GeoCLIPGalleryHead",
    "refdb": "terraloc.models.refdb_head:ReferenceDatabaseHead",
    "geosurge": "terraloc.models.geosurge_head:GeoSurgeCellHead",
    "geosurge+fusion": "terraloc.models.fusion_head:FusedGeoSurgeHead",
    "text": "terraloc.models.text_head:TextPlaceHead",
    "geoclip+text": "terraloc.models.text_scoring:TextRescoredHead",
    "g3": "terraloc.models.g3:G3Head",
}

_REGISTRY: dict[str, type[Any]] = {}


def register_head(name: str) -> Callable[[type[Any]], type[Any]]:
    """Class decorator: register a head class under ``name`` (sets ``cls.name``)."""

    def deco(cls: type[Any]) -> type[Any]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_heads() -> list[str]:
    """Every head name: built-ins, registered classes and installed entry points."""
    return sorted({*BUILTIN_HEADS, *_REGISTRY, *_entry_points()})


def head_class(name: str) -> type[Any]:
    """The class registered as ``name``.

    Raises:
        InputError: no such head (the message lists the known ones).
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    target = BUILTIN_HEADS.get(name)
    if target is not None:
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        _REGISTRY.setdefault(name, cls)
        return _REGISTRY[name]
    eps = _entry_points()
    if name in eps:
        try:
            cls = eps[name].load()
        except Exception as exc:  # a broken third-party package: one line, not a traceback
            raise InputError(f"head '{name}' ({eps[name].value}) failed to load: {exc}", field="head") from None
        _REGISTRY.setdefault(name, cls)
        cls.name = name
        return cls
    raise InputError(f"unknown head '{name}'; known: {', '.join(available_heads())}", field="head")


# --------------------------------------------------------------------------- the one place for checks


def check_ten_crop(cls: type[Any], ten_crop: bool) -> None:
    """Refuse ten-crop for a head that cannot average crops."""
    if ten_crop and not getattr(cls, "supports_ten_crop", False):
        able = [n for n in BUILTIN_HEADS if n == "geoclip"]
        raise InputError(
            f"ten-crop is not supported by the {cls.name} head (supported by: {', '.join(able)})", field="ten_crop"
        )


def check_dim(got: int, want: int | None, *, what: str, source: str = "", field_name: str = "backbone") -> None:
    """Refuse a feature width that differs from what the head (or its file) expects."""
    if want is not None and got != want:
        where = f" ({source})" if source else ""
        raise InputError(
            f"the backbone gives {got}-d features but {what}{where} expects {want}-d "
            "(use the backbone it was made with)",
            field=field_name,
        )


def check_backbone(
    required: Mapping[str, Any] | None, backbone: Any, *, what: str, source: str = "", field_name: str = "backbone"
) -> None:
    """Refuse a backbone whose weights differ from the ones ``required`` records (``{"id", "hash", "dim"}``).

    A record without a hash (older files) only checks the dimension.
    """
    if not required:
        return
    want_hash = required.get("hash")
    if want_hash and want_hash != backbone.weights_hash:
        where = f" ({source})" if source else ""
        raise InputError(
            f"{what}{where} was built with backbone '{required.get('id')}' (weights {want_hash}) but the backbone in "
            f"use is '{backbone.model_id}' (weights {backbone.weights_hash}); use --backbone {required.get('id')}",
            field=field_name,
        )
    check_dim(int(backbone.dim), required.get("dim"), what=what, source=source, field_name=field_name)


def build_head(config: HeadConfig, backbone: Any, progress: Callable[[str, int, int], None] | None = None) -> Any:
    """Build ``config.head`` for ``backbone``: ten-crop, dimension and backbone checks happen here.

    ``progress(stage, done, total)`` is handed to heads whose ``from_config`` takes a ``progress``
    keyword (building a gallery or an index can take minutes the first time).

    Returns:
        An object following :class:`Head`.

    Raises:
        InputError: unknown head, ten-crop on a head without it, a backbone of the wrong width or
            other weights than the head's files record.
    """
    cls = head_class(config.head)
    check_ten_crop(cls, bool(config.ten_crop))
    import inspect

    takes_progress = "progress" in inspect.signature(cls.from_config).parameters
    head = cls.from_config(config, backbone, progress=progress) if takes_progress else cls.from_config(config, backbone)
    what = f"the {cls.name} head"
    check_backbone(getattr(head, "required_backbone", None), backbone, what=what, source=_source(head))
    check_dim(int(backbone.dim), getattr(head, "input_dim", None), what=what, source=_source(head))
    return head


def _source(head: Any) -> str:
    files = head.files() if hasattr(head, "files") else {}
    return ", ".join(str(v) for v in files.values())
