"""What a calibrator is tied to: the head configuration that produced the predictions."""

from __future__ import annotations

from typing import Any

FEATURE_K = 20  # candidates the pipeline computes features over (part of the identity)


def pipeline_identity(model_info: dict[str, Any]) -> dict[str, Any]:
    """What a calibrator for a :class:`~terraloc.pipeline.Geolocator` is tied to: its model
    description (``model_info``: head, backbone weights hash, head weights, gallery, database
    size, reasoner, ...) without the reference database's folder and the backbone's local
    folder name (they differ between machines; the weights hash stays), plus the feature
    definition."""
    info = {k: v for k, v in model_info.items() if k not in ("features",)}
    if isinstance(info.get("backbone"), dict):
        info["backbone"] = {k: v for k, v in info["backbone"].items() if k != "id"}
    if isinstance(info.get("refdb"), dict):
        info["refdb"] = {k: v for k, v in info["refdb"].items() if k != "path"}
    return {**info, "features": {"k": FEATURE_K, "version": "terraloc.confidence v1"}}
