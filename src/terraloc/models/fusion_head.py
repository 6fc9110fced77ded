"""GeoSURGE head on the fused visual feature, for the prediction pipeline.

``photo → (CLIP pixels, ADE20K map with the same crop) → CLIP tokens → semantic fusion → 768-d
→ GeoSURGE geocell hierarchy → top-k (lat, lon, probability)``.

The pipeline's batching hands heads stacked arrays, so :meth:`FusedGeoSurgeHead.transform`
returns a ``(4, S, S)`` float32 array per photo: the three normalised pixel channels plus the
map's class ids as a fourth channel (exact in float32); :meth:`FusedGeoSurgeHead.predict` splits them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from terraloc.errors import InputError
from terraloc.models.head import BaseHead, Candidates, register_head


@register_head("geosurge+fusion")
class FusedGeoSurgeHead(BaseHead):
    """A trained fusion checkpoint + GeoSURGE head on a terraloc CLIP backbone.

    A pixel head (``input = "pixels"``): :meth:`transform` adds the segmentation map as a fourth
    channel, :meth:`predict` runs CLIP tokens → fusion → GeoSURGE. The checkpoint records the CLIP
    it was trained on (``required_backbone``); :func:`~terraloc.models.head.build_head` refuses another.

    Args:
        backbone: the pipeline's CLIP backbone (its last block is replaced by the checkpoint's).
        fusion: ``fusion.pt`` written by ``terraloc fusion train``.
        geosurge: GeoSURGE head checkpoint over the fused feature (default: ``geosurge.pt``
            beside ``fusion``).
        segmenter: segmentation provider spec (``tflite`` or ``oneformer:DIR``).
        cache: read/write segmentation maps in the map cache.

    Raises:
        MissingResourceError / InputError: missing or mismatching checkpoints or models.
    """

    input = "pixels"

    def __init__(
        self,
        backbone: Any,
        fusion: str | Path,
        geosurge: str | Path | None = None,
        segmenter: str = "tflite",
        cache: bool = True,
    ) -> None:
        from terraloc.encoders.segmentation import SegmentationCache, load_segmenter
        from terraloc.models.fused_encoder import load_fused_checkpoint
        from terraloc.models.geosurge import GeoSurgeHead

        if not hasattr(backbone, "vision_model"):
            raise InputError("semantic fusion needs a CLIP backbone (vision tokens)", field="backbone")
        self.encoder, payload = load_fused_checkpoint(fusion, backbone)
        self.encoder.requires_grad_(False)
        gs = Path(geosurge) if geosurge is not None else Path(fusion).with_name("geosurge.pt")
        self.head = GeoSurgeHead.from_checkpoint(gs)
        if self.head.input_dim != self.encoder.fusion.cfg.out_dim:
            raise InputError(
                f"GeoSURGE head expects {self.head.input_dim}-d features, "
                f"fusion gives {self.encoder.fusion.cfg.out_dim}",
                path=gs,
            )
        self.segmenter = load_segmenter(segmenter)
        self._cache = SegmentationCache(self.segmenter) if cache else None
        self._lock = threading.Lock()  # TFLite interpreters are not thread-safe
        self.info = {
            "fusion": str(fusion),
            "geosurge": str(gs),
            "segmenter": self.segmenter.provider_id,
            "fusion_blocks": self.encoder.fusion.cfg.num_blocks,
            "trained_backbone": payload.get("backbone", ""),
        }
        self.fusion_path, self.geosurge_path = Path(fusion), gs
        from terraloc.models.geosurge_head import recorded_backbone

        self.required_backbone = recorded_backbone(payload)

    @classmethod
    def from_config(cls, config: Any, backbone: Any) -> FusedGeoSurgeHead:
        if not config.fusion:
            raise InputError("the geosurge+fusion head needs a fusion checkpoint (--fusion FILE)", field="fusion")
        return cls(backbone, config.fusion, config.checkpoint, config.segmenter)

    def describe(self) -> dict[str, Any]:
        return {"fusion": self.info}

    def files(self) -> dict[str, str]:
        return {"fusion": str(self.fusion_path), "checkpoint": str(self.geosurge_path)}

    def segment(self, image: Image.Image) -> NDArray[np.uint8]:
        """The photo's ``(H, W)`` map (cached by pixel content)."""
        with self._lock:
            if self._cache is not None:
                return self._cache.get(image, image)[0]
            return self.segmenter.segment(image)

    def transform(self, preprocess: Callable[[Image.Image], NDArray[np.float32]]) -> Callable[[Image.Image], Any]:
        """Per-photo function for the pipeline's batching: ``(4, S, S)`` pixels + map channel."""
        from terraloc.models.fusion import prepare_maps

        size, crop = self.encoder.size, self.encoder.crop

        def fn(image: Image.Image) -> NDArray[np.float32]:
            pixels = np.asarray(preprocess(image), dtype=np.float32)
            seg = prepare_maps([self.segment(image)], size, crop)[0].numpy().astype(np.float32)
            return np.concatenate([pixels, seg[None]], axis=0)

        return fn

    @torch.no_grad()
    def features(self, stacked: torch.Tensor) -> torch.Tensor:
        """``(B, 4, S, S)`` from :meth:`transform` → ``(B, 768)`` fused features."""
        pixels, seg = stacked[:, :3], stacked[:, 3].round().long()
        return self.encoder(pixels, seg)  # type: ignore[no-any-return]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, top_k: int) -> Candidates:
        """``(B, 4, S, S)`` from :meth:`transform` → candidates; evidence names the cell at every level."""
        latlon, probs, leaves = self.head.predict_leaves(self.features(x), top_k=top_k)
        anc = self.head.partition.ancestry
        evidence = [[{"cells": [int(c) for c in anc[leaf]]} for leaf in row] for row in leaves]
        return Candidates(latlon, probs, evidence)
