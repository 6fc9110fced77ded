"""The segmentation-provider interface, nearest-neighbour map resizing and map files.

A provider turns one RGB photo into an ``(H, W)`` ``uint8`` map of ADE20K class ids
(see :mod:`terraloc.encoders.segmentation.classes`) of the photo's own size.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image, UnidentifiedImageError

from terraloc.encoders.segmentation.classes import validate_map
from terraloc.errors import InputError
from terraloc.io import atomic_write_bytes


@runtime_checkable
class Segmenter(Protocol):
    """A segmentation provider.

    Attributes:
        provider_id: short stable name of the provider and its model (used in cache keys).
        weights_hash: SHA-256 (hex) of the model weights.
    """

    provider_id: str
    weights_hash: str

    def segment(self, image: Image.Image) -> np.ndarray:
        """Segment one RGB image; returns an ``(H, W)`` uint8 map, ``H, W`` = the image's height, width."""
        ...


def load_image(source: Any) -> Image.Image:
    """Open an image (path, bytes, PIL image or HxW[x3] array) as RGB with EXIF orientation applied.

    The one image loader of terraloc (:func:`terraloc.encoders.image.loading.load_image`).

    Raises:
        InputError: the file is missing, unreadable or not an image.
    """
    from terraloc.encoders.image.loading import load_image as _load

    return _load(source)


def resize_map_nearest(seg: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a class-id map to ``size = (height, width)`` by nearest neighbour (never interpolated).

    Args:
        seg: ``(h, w)`` integer map.
        size: target ``(H, W)`` in pixels.

    Returns:
        ``(H, W)`` map with the same dtype; every value is one of the input's values.
    """
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise InputError(f"target map size must be positive, got {size}")
    arr = np.asarray(seg)
    if arr.shape == (h, w):
        return arr
    # Index arithmetic (pixel centres), identical in both directions and exact for integer ids.
    rows = np.minimum(((np.arange(h) + 0.5) * arr.shape[0] / h).astype(np.int64), arr.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * arr.shape[1] / w).astype(np.int64), arr.shape[1] - 1)
    return arr[rows[:, None], cols[None, :]]


def center_crop_like_clip(seg: np.ndarray, size: int, crop: int | None = None) -> np.ndarray:
    """Apply CLIP's image geometry to a map (nearest neighbour), so map pixels line up with CLIP's input.

    As ``CLIPImageProcessor``: the shorter side becomes ``size`` (the longer one
    ``int(size * long / short)``), then a centre ``crop x crop`` crop with top/left offsets
    ``(H - crop) // 2``; where the crop is larger than the resized map it is padded with
    :data:`~terraloc.encoders.segmentation.classes.IGNORE_ID`.

    Returns:
        ``(crop, crop)`` map (``crop`` defaults to ``size``).
    """
    from terraloc.encoders.segmentation.classes import IGNORE_ID

    crop = size if crop is None else int(crop)
    h, w = seg.shape
    if h <= w:
        nh, nw = size, max(1, int(size * w / h))
    else:
        nh, nw = max(1, int(size * h / w)), size
    resized = resize_map_nearest(seg, (nh, nw))
    out = np.full((crop, crop), IGNORE_ID, dtype=resized.dtype)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    src_t, src_l = max(0, top), max(0, left)
    dst_t, dst_l = max(0, -top), max(0, -left)
    ch, cw = min(crop - dst_t, nh - src_t), min(crop - dst_l, nw - src_l)
    out[dst_t : dst_t + ch, dst_l : dst_l + cw] = resized[src_t : src_t + ch, src_l : src_l + cw]
    return out


def save_map_png(path: str | Path, seg: np.ndarray) -> None:
    """Write a map as an 8-bit greyscale PNG whose pixel values are the class ids (atomic)."""
    buf = io.BytesIO()
    Image.fromarray(validate_map(seg), mode="L").save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def load_map_png(path: str | Path, *, sanitize: bool = False) -> np.ndarray:
    """Read a class-id PNG written by :func:`save_map_png` (or any 8-bit single-channel PNG of ids).

    Raises:
        InputError: missing or unreadable file, not single-channel, or unknown class ids
            (unless ``sanitize``: those become the ignore id).
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16"):
                raise InputError(
                    f"segmentation map must be a single-channel image of ids, got mode {im.mode}", path=path
                )
            arr = np.asarray(im)
    except FileNotFoundError:
        raise InputError("segmentation map not found", path=path) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"unreadable segmentation map ({exc.__class__.__name__})", path=path) from None
    return validate_map(arr, path=path, sanitize=sanitize)
