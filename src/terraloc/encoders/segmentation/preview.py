"""Colourised previews of segmentation maps with a legend of the top classes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from terraloc.encoders.segmentation.base import resize_map_nearest
from terraloc.encoders.segmentation.classes import class_histogram, class_name, palette


def colorize(seg: np.ndarray) -> Image.Image:
    """RGB image of a map, one fixed colour per class id (unlabelled = black)."""
    return Image.fromarray(palette()[np.asarray(seg, dtype=np.uint8)], mode="RGB")


def preview(image: Image.Image, seg: np.ndarray, top: int = 8, max_width: int = 1024) -> Image.Image:
    """Side-by-side photo | colour map (blended 60 % over the photo) with a legend below.

    Args:
        image: the RGB photo.
        seg: its ``(H, W)`` map (resized by nearest neighbour if its size differs).
        top: number of classes in the legend (largest pixel share first).
        max_width: width of the whole preview in pixels.
    """
    rgb = image.convert("RGB")
    scale = min(1.0, max_width / (2 * rgb.width))
    w, h = max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))
    photo = rgb.resize((w, h), Image.Resampling.BILINEAR)
    small = resize_map_nearest(seg, (h, w))
    overlay = Image.blend(photo, colorize(small), 0.6)
    hist = class_histogram(seg)[:top]
    row = 18
    canvas = Image.new("RGB", (max(2 * w, 240), h + row * len(hist) + 8), "white")
    canvas.paste(photo, (0, 0))
    canvas.paste(overlay, (w, 0))
    draw = ImageDraw.Draw(canvas)
    pal = palette()
    for i, (cid, frac) in enumerate(hist):
        y = h + 4 + i * row
        draw.rectangle([4, y, 18, y + 13], fill=tuple(int(c) for c in pal[cid]), outline="black")
        draw.text((24, y), f"{class_name(cid)}  {100 * frac:.1f}%", fill="black")
    return canvas
