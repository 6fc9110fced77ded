"""The 150 ADE20K (SceneParsing) classes, the ignore id, a colour palette and map validation.

terraloc's segmentation maps are ``(H, W)`` ``uint8`` arrays of ADE20K class ids in the
150-class convention used by OneFormer/Mask2Former (``0 = wall`` ... ``149 = flag``), plus
:data:`IGNORE_ID` (255) for pixels no class was assigned to (the TFLite model's class 0
"others", padding, or unknown ids when sanitised).
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from terraloc.errors import InputError

#: Id used for "no ADE20K class" (the TFLite model's ``others``; Hugging Face's ``ignore_value``).
IGNORE_ID = 255
#: Number of real ADE20K classes.
NUM_CLASSES = 150

#: ADE20K SceneParsing class names, index = terraloc class id (0..149).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island",
    "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
assert len(ADE20K_CLASSES) == NUM_CLASSES

#: Classes GeoSURGE calls unreliable for geolocation (people and vehicles), by id.
UNRELIABLE_CLASSES: tuple[int, ...] = tuple(
    ADE20K_CLASSES.index(n)
    for n in ("person", "car", "bus", "truck", "van", "minibike", "bicycle", "boat", "ship", "airplane", "animal")
)


def class_name(class_id: int) -> str:
    """Name of a terraloc class id (``"unlabelled"`` for :data:`IGNORE_ID`)."""
    if class_id == IGNORE_ID:
        return "unlabelled"
    if 0 <= class_id < NUM_CLASSES:
        return ADE20K_CLASSES[class_id]
    return f"unknown({class_id})"


def class_ids(names: list[str] | tuple[str, ...]) -> list[int]:
    """Map class names (or numeric strings) to ids; raises :class:`InputError` on an unknown name."""
    out = []
    for name in names:
        key = str(name).strip().lower()
        if key.isdigit():
            cid = int(key)
            if not 0 <= cid < NUM_CLASSES:
                raise InputError(f"class id {cid} is not an ADE20K id (0..149)", field="ignore class")
            out.append(cid)
        elif key in ADE20K_CLASSES:
            out.append(ADE20K_CLASSES.index(key))
        else:
            raise InputError(f"unknown ADE20K class name {name!r}", field="ignore class")
    return out


def palette() -> np.ndarray:
    """A fixed ``(256, 3)`` uint8 RGB palette; ids 0..149 get distinct colours, 255 is black."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(NUM_CLASSES):
        h = (i * 0.618033988749895) % 1.0
        s = 0.55 + 0.45 * ((i * 7) % 3) / 2
        v = 0.65 + 0.35 * ((i * 5) % 2)
        pal[i] = [round(255 * c) for c in colorsys.hsv_to_rgb(h, s, v)]
    # A few familiar colours for the classes that dominate outdoor photos.
    fixed = {"sky": (70, 130, 230), "tree": (40, 140, 40), "grass": (120, 200, 60), "water": (20, 60, 200),
             "sea": (10, 40, 160), "building": (180, 80, 60), "road": (120, 120, 120), "person": (230, 30, 200),
             "car": (240, 200, 0), "mountain": (140, 100, 60), "wall": (200, 190, 170)}  # fmt: skip
    for name, rgb in fixed.items():
        pal[ADE20K_CLASSES.index(name)] = rgb
    return pal


def validate_map(seg: np.ndarray, *, path: str | Path | None = None, sanitize: bool = False) -> np.ndarray:
    """Check a segmentation map and return it as ``(H, W)`` ``uint8``.

    Args:
        seg: ``(H, W)`` integer array of class ids.
        path: file the map came from (named in errors).
        sanitize: map unknown ids (not 0..149 and not 255) to :data:`IGNORE_ID` instead of raising.

    Raises:
        InputError: wrong shape or dtype, or unknown ids when ``sanitize`` is False.
    """
    arr = np.asarray(seg)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"segmentation map must be a non-empty (H, W) array, got shape {arr.shape}", path=path)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise InputError(f"segmentation map must hold integer class ids, got {arr.dtype}", path=path)
    bad = (arr < 0) | ((arr >= NUM_CLASSES) & (arr != IGNORE_ID))
    if bad.any():
        if not sanitize:
            ids = sorted({int(v) for v in np.unique(arr[bad])[:5]})
            raise InputError(f"unknown ADE20K class id(s) {ids} (valid: 0..149, 255 = unlabelled)", path=path)
        arr = np.where(bad, IGNORE_ID, arr)
    return arr.astype(np.uint8, copy=False)


def class_histogram(seg: np.ndarray) -> list[tuple[int, float]]:
    """``[(class_id, fraction_of_pixels), ...]`` sorted by decreasing fraction (ignore id included)."""
    counts = np.bincount(np.asarray(seg, dtype=np.int64).ravel(), minlength=256)
    total = max(1, int(counts.sum()))
    order = np.argsort(-counts, kind="stable")
    return [(int(c), float(counts[c]) / total) for c in order if counts[c] > 0]
