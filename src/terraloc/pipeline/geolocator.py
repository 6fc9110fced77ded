"""The :class:`Geolocator`: one object composed from a :class:`GeolocatorConfig`.

``photo → backbone → head (GeoCLIP gallery softmax | reference-database kNN consensus) →
top-k candidates → offline place names``. Decoding runs in worker threads, the backbone in
batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from terraloc.errors import InputError
from terraloc.pipeline.types import ImagePrediction, Prediction

PRESETS: dict[str, dict[str, Any]] = {
    "geoclip": {"backbone": "clip-vit-large-patch14", "head": "geoclip"},
    "geoclip-336": {"backbone": "clip-vit-large-patch14-336", "head": "geoclip"},
    "streetclip-geoclip": {"backbone": "streetclip", "head": "geoclip"},
}


@dataclass(frozen=True)
class GeolocatorConfig:
    """What a :class:`Geolocator` is made of.

    Attributes:
        backbone: image backbone spec (folder, known name, hub id, ``efficientnet-lite0``).
        head: ``"geoclip"`` (GPS-gallery softmax) or ``"refdb"`` (reference-photo kNN consensus).
        refdb: reference database folder (required for ``head="refdb"``).
        gallery: GPS gallery for the GeoCLIP head (``"geoclip-100k"``).
        search: gallery search backend; ``"flat"`` (exact, full softmax) for GeoCLIP.
        k_neighbors, temperature, radius_km: reference-database consensus settings.
        ten_crop: average the logits of ten crops (GeoCLIP head only).
        batch_size: images per backbone call; workers: decoding threads.
        places: add offline place names (city, admin1, country).
        reasoner: ``None`` or ``"rag"``: rank the reference database's nearest and farthest
            neighbours (and an LLM's answers, with ``llm``) by geo-consensus (refdb head only).
        llm: LLM spec for the ``rag`` reasoner (``local:qwen2.5-1.5b``, ``http://HOST/v1#MODEL``).
        farthest: farthest references handed to the reasoner.
        calibrator: a ``terraloc calibrate`` JSON file fitted for this configuration; predictions
            then carry ``confidence`` (P(error <= t) for t in 1/25/200/750/2500 km).
        distinct_km: candidates within this distance of a better one are merged into it (their
            probabilities summed), so the top-k names k different places; 0 = the raw list.
        min_confidence: ``"25:0.8"``: abstain (an explicit abstained result) when
            P(error <= 25 km) < 0.8; needs ``calibrator``.
    """

    backbone: str = "clip-vit-large-patch14"
    head: str = "geoclip"
    refdb: str | None = None
    gallery: str = "geoclip-100k"
    search: str = "flat"
    k_neighbors: int = 16
    temperature: float = 0.05
    radius_km: float = 100.0
    ten_crop: bool = False
    batch_size: int = 16
    workers: int = 2
    places: bool = True
    reasoner: str | None = None
    checkpoint: str | None = None  # trained GeoSURGE head (``terraloc train geosurge``), head="geosurge"
    fusion: str | None = None  # semantic-fusion checkpoint (``terraloc fusion train``), head="geosurge"
    segmenter: str = "tflite"  # segmentation provider for fusion (``tflite`` or ``oneformer:DIR``)
    llm: str | None = None
    farthest: int = 5
    calibrator: str | None = None
    distinct_km: float = 25.0
    min_confidence: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _label(src: Any, i: int) -> str:
    if isinstance(src, str | Path):
        return str(src)
    if isinstance(src, bytes | bytearray):
        return f"<bytes #{i}>"
    if isinstance(src, np.ndarray):
        return f"<array #{i}>"
    return f"<image #{i}>"


class Geolocator:
    """Predict where photos were taken.

    Example::

        geo = Geolocator.from_pretrained("geoclip")                 # needs `terraloc models pull`
        geo = Geolocator.from_pretrained("geoclip", backbone="/path/to/clip-folder")
        geo = Geolocator(GeolocatorConfig(backbone="efficientnet-lite0", head="refdb", refdb="db/"))
        [pred] = geo.predict("photo.jpg", top_k=5)
        pred.top.lat, pred.top.lon, pred.top.country
    """

    def __init__(self, config: GeolocatorConfig, backbone: Any = None) -> None:
        from terraloc.encoders.image import load_backbone

        self.config = config
        if config.search != "flat":
            raise InputError(f"search backend '{config.search}' is not available here; use 'flat'", field="search")
        if config.gallery != "geoclip-100k":
            raise InputError(f"unknown gallery '{config.gallery}'; known: geoclip-100k", field="gallery")
        self.backbone = backbone if backbone is not None else load_backbone(config.backbone)
        self._geoclip: Any = None
        self._db: Any = None
        self._geosurge: Any = None
        self._fused: Any = None
        if config.head == "geosurge" and config.fusion:
            # GeoSURGE on the fused (CLIP tokens + ADE20K map) feature; head default: geosurge.pt beside it
            from terraloc.models.fusion_head import FusedGeoSurgeHead

            if config.ten_crop:
                raise InputError("ten-crop is supported with the geoclip head only", field="ten_crop")
            self._fused = FusedGeoSurgeHead(self.backbone, config.fusion, config.checkpoint, config.segmenter)
        elif config.head == "geoclip":
            from terraloc.models.geoclip import GeoCLIP, GeoCLIPHead

            self._geoclip = GeoCLIP(self.backbone, GeoCLIPHead.pretrained()).eval()
        elif config.head == "refdb":
            from terraloc.search.refdb import ReferenceDatabase

            if not config.refdb:
                raise InputError("the refdb head needs a reference database (--db DIR)", field="db")
            if config.ten_crop:
                raise InputError("ten-crop is supported with the geoclip head only", field="ten_crop")
            self._db = ReferenceDatabase.load(config.refdb, backbone=self.backbone)
        elif config.head == "geosurge":
            from terraloc.models.geosurge import GeoSurgeHead

            if not config.checkpoint:
                raise InputError("the geosurge head needs a trained checkpoint (--checkpoint FILE)", field="checkpoint")
            if config.ten_crop:
                raise InputError("ten-crop is supported with the geoclip head only", field="ten_crop")
            self._geosurge = GeoSurgeHead.from_checkpoint(config.checkpoint)
        else:
            raise InputError(f"unknown head '{config.head}'; known: geoclip, refdb, geosurge", field="head")
        self._reasoner: Any = None
        if config.reasoner is not None:
            if config.reasoner != "rag":
                raise InputError(f"unknown reasoner '{config.reasoner}'; known: rag", field="reasoner")
            if self._db is None:
                raise InputError("the rag reasoner needs a reference database (--db DIR)", field="reasoner")
            from terraloc.rag.pipeline_reasoner import RagReasoner

            self._reasoner = RagReasoner(config.llm, n_far=config.farthest)
        elif config.llm is not None:
            raise InputError("--llm needs --reasoner rag", field="llm")
        self.model_info = self._describe()
        self._init_confidence()

    def _init_confidence(self) -> None:
        from terraloc.confidence import Calibrator, parse_min_confidence
        from terraloc.pipeline.confidence import pipeline_identity

        cfg = self.config
        if cfg.distinct_km < 0:
            raise InputError(f"must be >= 0 km, got {cfg.distinct_km}", field="distinct-km")
        self.identity = pipeline_identity(self.model_info)
        self.calibrator = None if cfg.calibrator is None else Calibrator.load(cfg.calibrator, self.identity)
        self.min_confidence = parse_min_confidence(cfg.min_confidence)
        if self.min_confidence is not None and self.calibrator is None:
            raise InputError("--min-confidence needs a calibrator (--calibrator FILE)", field="min-confidence")

    @classmethod
    def from_pretrained(cls, name: str = "geoclip", **overrides: Any) -> Geolocator:
        """A preset (``geoclip``, ``geoclip-336``, ``streetclip-geoclip``) with config overrides."""
        if name not in PRESETS:
            raise InputError(f"unknown preset '{name}'; known: {', '.join(PRESETS)}", field="model")
        return cls(GeolocatorConfig(**{**PRESETS[name], **overrides}))

    def with_config(self, **changes: Any) -> Geolocator:
        """A new Geolocator sharing this one's backbone, with config changes."""
        return Geolocator(replace(self.config, **changes), backbone=self.backbone)

    def _describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"head": self.config.head, "backbone": self.backbone.describe()}
        if self._geoclip is not None:
            info["geoclip_head_hash"] = self._geoclip.head.weights_hash
            info["gallery"] = self.config.gallery
            info["ten_crop"] = self.config.ten_crop
        if self._fused is not None:
            info["fusion"] = self._fused.info
        if self._geosurge is not None:
            info["geosurge"] = {"checkpoint": str(self.config.checkpoint), "cells": self._geosurge.partition.sizes}
        if self._db is not None:
            info["refdb"] = {"path": str(self._db.path), "n": len(self._db), "k": self.config.k_neighbors}
        if getattr(self, "_reasoner", None) is not None:
            info["reasoner"] = self._reasoner.describe()
        return info

    # ------------------------------------------------------------------ core

    def _transform(self) -> Callable[[Any], NDArray[np.float32]]:
        pre = self.backbone.preprocess
        if self._fused is not None:
            return self._fused.transform(pre)  # type: ignore[no-any-return]
        return pre.ten_crop if self.config.ten_crop else pre  # type: ignore[no-any-return]

    @torch.no_grad()
    def _heads(self, pixels: torch.Tensor, top_k: int) -> list[list[tuple[float, float, float]]]:
        """``(B, 3, H, W)`` → per image a list of ``(lat, lon, probability)``, best first."""
        if self._geoclip is not None:
            t = self._geoclip.predict_pixels(pixels, top_k)
            return [
                [(float(t.coords[i, j, 0]), float(t.coords[i, j, 1]), float(t.scores[i, j])) for j in range(top_k)]
                for i in range(t.coords.shape[0])
            ]
        if self._fused is not None:
            return self._fused.predict_pixels(pixels, top_k)  # type: ignore[no-any-return]
        if self._geosurge is not None:
            emb = self.backbone.embed_pixels(pixels).numpy()
            if emb.shape[1] != self._geosurge.input_dim:
                raise InputError(
                    f"backbone gives {emb.shape[1]}-d embeddings but the GeoSURGE checkpoint expects "
                    f"{self._geosurge.input_dim}-d (train it on shards from the same backbone)",
                    field="checkpoint",
                )
            ll, pr = self._geosurge.predict(emb, top_k)
            return [
                [(float(ll[i, j, 0]), float(ll[i, j, 1]), float(pr[i, j])) for j in range(ll.shape[1])]
                for i in range(ll.shape[0])
            ]
        from terraloc.search.refdb import ConsensusConfig, knn_consensus

        emb = self.backbone.embed_pixels(pixels).numpy()
        sims, idx = self._db.search(emb, self.config.k_neighbors)
        if self._reasoner is not None:
            fsims, fidx = self._db.farthest(emb, self.config.farthest)
            return [
                self._reasoner.rank(
                    f"query-{i}",
                    (self._db.coords[idx[i]], sims[i]),
                    (self._db.coords[fidx[i]], fsims[i]),
                    top_k,
                )
                for i in range(emb.shape[0])
            ]
        cfg = ConsensusConfig(self.config.k_neighbors, self.config.temperature, self.config.radius_km)
        out = []
        for i in range(emb.shape[0]):
            locs, probs = knn_consensus(self._db.coords[idx[i]], sims[i], cfg, top_k)
            out.append([(float(a), float(b), float(p)) for (a, b), p in zip(locs, probs, strict=True)])
        return out

    def predict_iter(
        self, images: Sequence[Any], top_k: int = 5, labels: Sequence[str] | None = None
    ) -> Iterator[ImagePrediction]:
        """Predict ``images`` in order, yielding one :class:`ImagePrediction` per input as batches finish.

        A bad image yields a prediction with ``error`` set; the others go on.
        """
        from terraloc.encoders.image.batching import iter_pixel_batches

        if top_k < 1:
            raise InputError(f"top-k must be at least 1, got {top_k}", field="top_k")
        names = list(labels) if labels is not None else [_label(s, i) for i, s in enumerate(images)]
        for batch in iter_pixel_batches(
            images, self._transform(), batch_size=self.config.batch_size, workers=self.config.workers
        ):
            results: dict[int, ImagePrediction] = {
                i: ImagePrediction(names[i], [], msg, self.model_info) for i, msg in batch.errors.items()
            }
            if batch.indices:
                from terraloc.pipeline.confidence import confidence_stage, raw_k

                raw = self._heads(batch.pixels, raw_k(top_k, self.config.distinct_km))
                staged = confidence_stage(
                    raw,
                    top_k,
                    calibrator=self.calibrator,
                    distinct_km=self.config.distinct_km,
                    min_confidence=self.min_confidence,
                )
                cands = [[] if st.abstained else st.places for st in staged]
                flat = [c for cs in cands for c in cs]
                places = self._places([(c[0], c[1]) for c in flat])
                pos = 0
                for i, cs, st in zip(batch.indices, cands, staged, strict=True):
                    preds = []
                    for r, (lat, lon, p) in enumerate(cs, start=1):
                        pl = places[pos]
                        pos += 1
                        preds.append(Prediction(r, lat, lon, p, *pl))
                    w, h = batch.sizes.get(i, (None, None))
                    results[i] = ImagePrediction(
                        names[i],
                        preds,
                        None,
                        self.model_info,
                        w,
                        h,
                        confidence=st.confidence,
                        abstained=st.abstained,
                        region=st.region,
                        features=st.features,
                    )
            for i in sorted(results):
                yield results[i]

    def _places(self, latlon: list[tuple[float, float]]) -> list[tuple[str, str, str, str]]:
        if not self.config.places or not latlon:
            return [("", "", "", "")] * len(latlon)
        from terraloc.geo.places import reverse_geocode

        return [(p.city, p.admin1, p.country, p.country_code) for p in reverse_geocode(np.asarray(latlon))]

    def predict(self, images: Any, top_k: int = 5) -> list[ImagePrediction]:
        """Predict one image or a list: paths, PIL images, encoded bytes or ``(H, W, 3)`` arrays.

        Returns:
            One :class:`ImagePrediction` per input, in order (errors recorded per image).
        """
        if isinstance(images, str | Path | bytes | bytearray | np.ndarray) or not isinstance(images, Sequence):
            images = [images]
        return list(self.predict_iter(list(images), top_k=top_k))
