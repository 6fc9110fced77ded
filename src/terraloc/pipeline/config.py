"""``GeolocatorConfig``: what a :class:`~terraloc.pipeline.Geolocator` is made of — validated, saved, loaded.

A pydantic model: unknown fields and bad values are refused with one line naming the field
(:class:`~terraloc.errors.InputError`). ``Geolocator.save_pretrained(DIR)`` writes it to
``DIR/config.json`` together with the backbone's weight hash and the SHA-256 of every file the head
reads (``files``); a config loaded with those records refuses to run when any of them changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from terraloc.config import DEFAULT_BACKBONE
from terraloc.errors import InputError

CONFIG_FILE = "config.json"
CONFIG_FORMAT = "terraloc-geolocator"
CONFIG_VERSION = 1

#: reasoning stages after the head (``GeolocatorConfig.reasoner``)
REASONERS = ("rag",)

#: fields that decide which weights and data are used: changing one drops the recorded hashes
IDENTITY_FIELDS = frozenset({"backbone", "head", "gallery", "db", "checkpoint", "fusion"})


class FileRecord(BaseModel):
    """A file a saved geolocator depends on: absolute ``path`` and the SHA-256 prefix of its bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    sha256: str


class GeolocatorConfig(BaseModel):
    """What a :class:`~terraloc.pipeline.Geolocator` is made of.

    Attributes:
        backbone: image backbone spec (folder, known name, hub id, ``efficientnet-lite0``).
        head: a registered head (``geoclip``, ``refdb``, ``geosurge``, ``geosurge+fusion`` or a
            third party's, see :mod:`terraloc.models.head`).
        gallery: GPS gallery of the GeoCLIP head: ``geoclip-100k`` or a folder from
            ``terraloc gallery build``.
        index: gallery search: ``flat`` (exact, softmax over the whole gallery), ``hierarchical@...``
            or a FAISS factory string with ``@params`` (softmax over the retrieved shortlist).
        shortlist: rows an approximate index retrieves per image (the softmax's support).
        db: reference-photo database folder (``refdb`` head; neighbours for the ``rag`` reasoner).
        checkpoint: trained GeoSURGE checkpoint (``geosurge``; the GeoSURGE head over the fused
            feature for ``geosurge+fusion``, default ``geosurge.pt`` beside ``fusion``).
        fusion: semantic-fusion checkpoint (``geosurge+fusion``).
        segmenter: segmentation provider for fusion (``tflite`` or ``oneformer:DIR``).
        k_neighbors, temperature, radius_km: reference-database consensus settings.
        ten_crop: average the logits of ten crops (heads that support it: ``geoclip``).
        batch_size: images per backbone call; workers: decoding threads.
        places: add offline place names (city, admin1, country).
        reasoner: ``None`` or ``"rag"``: a reasoning stage after the head.
        llm: LLM spec for the ``rag`` reasoner (``local:qwen2.5-1.5b``, ``http://HOST/v1#MODEL``).
        farthest: farthest references handed to the reasoner.
        head_options: extra options for third-party heads.
        calibrator: a ``terraloc calibrate`` JSON file fitted for this configuration; predictions
            then carry ``confidence`` (P(error <= t) for t in 1/25/200/750/2500 km).
        distinct_km: candidates within this distance of a better one are merged into it (their
            probabilities summed), so the top-k names k different places; 0 = the head's raw list.
        min_confidence: ``"25:0.8"``: abstain (an explicit abstained result) when
            P(error <= 25 km) < 0.8; needs ``calibrator``.
        backbone_hash: the backbone's weight hash when saved; a different backbone is refused.
        files: ``{role: FileRecord}`` recorded when saved; a changed file is refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    backbone: str = DEFAULT_BACKBONE
    head: str = "geoclip"
    gallery: str = "geoclip-100k"
    index: str = Field("flat", validation_alias=AliasChoices("index", "search"))
    shortlist: int = Field(100, ge=1)
    db: str | None = Field(None, validation_alias=AliasChoices("db", "refdb"))
    checkpoint: str | None = None
    fusion: str | None = None
    segmenter: str = "tflite"
    k_neighbors: int = Field(16, ge=1)
    temperature: float = Field(0.05, gt=0)
    radius_km: float = Field(100.0, gt=0)
    ten_crop: bool = False
    batch_size: int = Field(16, ge=1)
    workers: int = Field(2, ge=0)
    places: bool = True
    reasoner: str | None = None
    llm: str | None = None
    farthest: int = Field(5, ge=0)
    head_options: dict[str, Any] = Field(default_factory=dict)
    calibrator: str | None = None
    distinct_km: float = Field(25.0, ge=0)
    min_confidence: str | None = None
    backbone_hash: str | None = None
    files: dict[str, FileRecord] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InputError(_one_line(exc), field=_first_field(exc)) from None

    @field_validator("index")
    @classmethod
    def _index_spec(cls, value: str) -> str:
        from terraloc.search.spec import parse_index_spec

        try:
            parse_index_spec(value)
        except InputError as exc:
            raise ValueError(exc.problem) from None
        return value.strip()

    @field_validator("reasoner")
    @classmethod
    def _reasoner(cls, value: str | None) -> str | None:
        if value is not None and value not in REASONERS:
            raise ValueError(f"unknown reasoner '{value}'; known: {', '.join(REASONERS)}")
        return value

    @field_validator("min_confidence")
    @classmethod
    def _min_confidence(cls, value: str | None) -> str | None:
        from terraloc.confidence.abstain import parse_min_confidence

        try:
            parse_min_confidence(value)
        except InputError as exc:
            raise ValueError(exc.problem) from None
        return value

    @field_validator("head", "backbone", "gallery", "segmenter")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @property
    def refdb(self) -> str | None:
        """Deprecated name of :attr:`db`."""
        return self.db

    @property
    def search(self) -> str:
        """Deprecated name of :attr:`index`."""
        return self.index

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (what ``config.json`` holds, without the format header)."""
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> GeolocatorConfig:
        """A validated copy with ``changes``; changing an identity field (backbone, head, gallery, db,
        checkpoint, fusion) drops the recorded hashes that no longer apply."""
        data = self.to_json()
        changed = {k for k, v in changes.items() if data.get(k) != v}
        if "backbone" in changed:
            data["backbone_hash"] = None
        if changed & (IDENTITY_FIELDS - {"backbone"}):
            data["files"] = {}
        data.update(changes)
        return GeolocatorConfig(**data)

    def save(self, directory: str | Path) -> Path:
        """Write ``DIR/config.json`` atomically; returns its path."""
        from terraloc.io import atomic_write_text

        path = Path(directory) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **self.to_json()}
        atomic_write_text(path, json.dumps(body, indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> GeolocatorConfig:
        """Read ``config.json`` (or ``DIR/config.json``) written by :meth:`save`.

        Raises:
            MissingResourceError: no such file.
            InputError: not a terraloc geolocator config, or an invalid field (naming the file).
        """
        from terraloc.errors import MissingResourceError
        from terraloc.io import read_tagged_json

        p = Path(path)
        if p.is_dir():
            p = p / CONFIG_FILE
        if not p.is_file():
            raise MissingResourceError(f"{p}: no saved geolocator here (expected {CONFIG_FILE})")
        body = read_tagged_json(p, CONFIG_FORMAT, "geolocator config")
        if body.get("version") != CONFIG_VERSION:
            raise InputError(f"unsupported config version {body.get('version')!r}", path=p, field="version")
        data = {k: v for k, v in body.items() if k not in ("format", "version")}
        try:
            return cls(**data)
        except InputError as exc:
            raise InputError(exc.problem, path=p, field=exc.field) from None


def _first_field(exc: ValidationError) -> str | None:
    errs = exc.errors()
    return ".".join(str(x) for x in errs[0]["loc"]) if errs and errs[0]["loc"] else None


def _one_line(exc: ValidationError) -> str:
    e = exc.errors()[0]
    msg = str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown option"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{msg}{more}"
