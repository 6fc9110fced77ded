"""Segmentation providers: photo -> ``(H, W)`` uint8 map of ADE20K class ids (255 = unlabelled).

Providers (:func:`load_segmenter` specs):

- ``"tflite"`` / ``"tflite:PATH"``: DeepLabv3-MobileNetV2 ADE20K (offline, shared folder);
- ``"oneformer:DIR"``: a local OneFormer ADE20K checkpoint via ``transformers``.
"""

from __future__ import annotations

from terraloc.encoders.segmentation.base import (
    Segmenter,
    center_crop_like_clip,
    load_image,
    load_map_png,
    resize_map_nearest,
    save_map_png,
)
from terraloc.encoders.segmentation.cache import SegmentationCache, default_cache_dir, image_key
from terraloc.encoders.segmentation.classes import (
    ADE20K_CLASSES,
    IGNORE_ID,
    NUM_CLASSES,
    UNRELIABLE_CLASSES,
    class_histogram,
    class_ids,
    class_name,
    validate_map,
)
from terraloc.errors import InputError


def load_segmenter(spec: str = "tflite", *, num_threads: int | None = None, device: str = "cpu") -> Segmenter:
    """Build a provider from a spec: ``tflite``, ``tflite:MODEL.tflite`` or ``oneformer:DIR``.

    Raises:
        InputError: unknown spec; MissingResourceError: model files missing.
    """
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("tflite", "deeplab", "deeplabv3"):
        from terraloc.encoders.segmentation.tflite import TFLiteADE20KSegmenter

        return TFLiteADE20KSegmenter(arg or None, num_threads=num_threads)
    if kind == "oneformer":
        if not arg:
            raise InputError("oneformer needs a local model folder: 'oneformer:DIR'", field="--segmenter")
        from terraloc.encoders.segmentation.oneformer import OneFormerADE20KSegmenter

        return OneFormerADE20KSegmenter(arg, device=device)
    raise InputError(
        f"unknown segmentation provider {spec!r} (use tflite, tflite:PATH or oneformer:DIR)", field="--segmenter"
    )


__all__ = [
    "ADE20K_CLASSES",
    "IGNORE_ID",
    "NUM_CLASSES",
    "UNRELIABLE_CLASSES",
    "SegmentationCache",
    "Segmenter",
    "center_crop_like_clip",
    "class_histogram",
    "class_ids",
    "class_name",
    "default_cache_dir",
    "image_key",
    "load_image",
    "load_map_png",
    "load_segmenter",
    "resize_map_nearest",
    "save_map_png",
    "validate_map",
]
