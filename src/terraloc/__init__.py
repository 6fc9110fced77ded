"""terraloc: tell where on Earth a photo was taken.

The package is layered; imports point one way::

    geo <- encoders <- search <- models <- rag / train <- pipeline <- cli / serve

``evaluate`` depends on ``geo`` only. See ``docs/ARCHITECTURE.md``.

``from terraloc import Geolocator, GeolocatorConfig`` is the Python API (imported on first use, so
``import terraloc`` stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Geolocator", "GeolocatorConfig", "__version__"]

if TYPE_CHECKING:
    from terraloc.pipeline import Geolocator, GeolocatorConfig


def __getattr__(name: str) -> Any:
    if name in ("Geolocator", "GeolocatorConfig"):
        import terraloc.pipeline as pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'terraloc' has no attribute {name!r}")
