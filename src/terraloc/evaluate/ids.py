"""Image identifiers: benchmark files and prediction files name images differently.

YFCC26k ids carry folder prefixes (``45/77/3228511372.jpg``), some tools drop extensions, some
keep full paths. Matching uses the file name's stem, so ``/photos/45/77/3228511372.jpg``,
``3228511372.jpg`` and ``3228511372`` all name the same image.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from pathlib import Path

from terraloc.errors import InputError


def image_key(image_id: str) -> str:
    """Return the matching key of an image id: its base name without the extension."""
    name = posixpath.basename(image_id.strip().replace("\\", "/"))
    stem, dot, ext = name.rpartition(".")
    # Only strip a real image-like extension; ids such as "78841376@N00" have no dot.
    if dot and ext.lower() in {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic"}:
        return stem
    return name


def check_unique_ids(ids: Sequence[str], lines: Sequence[int], path: Path, field: str, what: str) -> None:
    """Raise :class:`InputError` at the first empty id or the first id whose key repeats.

    Args:
        ids: image ids as written; lines: their 1-based line numbers; path, field: for the message;
        what: how a repeat is described, e.g. ``"image id"`` or ``"prediction for image"``.
    """
    seen: dict[str, int] = {}
    for raw, line in zip(ids, lines, strict=True):
        if raw == "":
            raise InputError("empty image id", path=path, row=int(line), field=field)
        key = image_key(raw)
        if key in seen:
            raise InputError(
                f"duplicate {what} '{raw}' (first on line {seen[key]})", path=path, row=int(line), field=field
            )
        seen[key] = int(line)
