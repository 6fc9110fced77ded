"""On-disk cache of segmentation maps, keyed by provider, weights and image content.

Layout: ``<root>/<provider_id>/<weights_hash[:12]>/<key[:2]>/<key>.png`` where ``key`` is the
SHA-256 of the decoded RGB pixels (EXIF orientation applied), so a photo read from a file, from
bytes or as a PIL image in the prediction pipeline finds the same entry. Each file is an 8-bit
PNG of class ids (see :func:`~terraloc.encoders.segmentation.base.save_map_png`).
The default root is ``TERRALOC_HOME/embeddings/segmentation`` — beside the embedding caches.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
from PIL import Image

from terraloc.encoders.segmentation.base import Segmenter, load_map_png, save_map_png
from terraloc.errors import InputError


def image_key(source: str | Path | bytes | Image.Image) -> str:
    """SHA-256 of an image's file bytes (paths, bytes) or of its decoded RGB pixels (PIL images)."""
    h = hashlib.sha256()
    if isinstance(source, Image.Image):
        rgb = source.convert("RGB")
        h.update(f"{rgb.width}x{rgb.height}".encode())
        h.update(rgb.tobytes())
    elif isinstance(source, bytes | bytearray):
        h.update(source)
    else:
        with open(source, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``TERRALOC_HOME/embeddings/segmentation``."""
    from terraloc.config import home_dir

    return home_dir() / "embeddings" / "segmentation"


class SegmentationCache:
    """Segment with a provider, reading and writing cached maps.

    Args:
        segmenter: the provider.
        root: cache root (default :func:`default_cache_dir`).
    """

    def __init__(self, segmenter: Segmenter, root: str | Path | None = None) -> None:
        self.segmenter = segmenter
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", segmenter.provider_id)
        self.dir = Path(root or default_cache_dir()) / safe / segmenter.weights_hash[:12]

    def path_for(self, key: str) -> Path:
        """Cache file of an image key."""
        return self.dir / key[:2] / f"{key}.png"

    def get(
        self, source: str | Path | bytes | Image.Image, image: Image.Image | None = None
    ) -> tuple[np.ndarray, bool]:
        """The map of an image, from the cache or computed (and stored).

        Args:
            source: path, bytes or PIL image.
            image: the decoded RGB image if already loaded (decoded from ``source`` otherwise); its
                pixels are the cache key.

        Returns:
            ``((H, W) uint8 map, was_cached)``.
        """
        from terraloc.encoders.segmentation.base import load_image

        img = image if image is not None else load_image(source)
        key = image_key(img)
        path = self.path_for(key)
        if path.is_file():
            try:
                return load_map_png(path), True
            except InputError:
                path.unlink(missing_ok=True)  # a damaged cache entry is recomputed
        seg = self.segmenter.segment(img)
        save_map_png(path, seg)
        return seg, False
