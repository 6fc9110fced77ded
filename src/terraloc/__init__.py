"""terraloc: tell where on Earth a photo was taken.

The package is layered; imports point one way::

    geo <- encoders <- models <- search / rag / train <- pipeline <- cli / serve

``evaluate`` depends on ``geo`` only. See ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
