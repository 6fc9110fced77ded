"""Encoders: GPS location encoders, image backbones and segmentation providers.

Depends on :mod:`terraloc.geo`.
"""

from terraloc.encoders.location import LocationEncoder, load_location_encoder

__all__ = ["LocationEncoder", "load_location_encoder"]
