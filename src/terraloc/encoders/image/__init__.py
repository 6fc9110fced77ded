"""Image encoders: robust loading, CLIP-style preprocessing and backbones behind one registry."""

from terraloc.encoders.image.backbones import (
    KNOWN_MODELS,
    CLIPBackbone,
    EfficientNetLite0Backbone,
    ImageBackbone,
    load_backbone,
    make_tiny_clip,
)
from terraloc.encoders.image.loading import IMAGE_EXTENSIONS, MAX_PIXELS, find_images, load_image
from terraloc.encoders.image.preprocess import Preprocess

__all__ = [
    "IMAGE_EXTENSIONS",
    "KNOWN_MODELS",
    "MAX_PIXELS",
    "CLIPBackbone",
    "EfficientNetLite0Backbone",
    "ImageBackbone",
    "Preprocess",
    "find_images",
    "load_backbone",
    "load_image",
    "make_tiny_clip",
]
