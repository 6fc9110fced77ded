"""Image identifiers: benchmark files and prediction files name images differently.

YFCC26k ids carry folder prefixes (``45/77/3228511372.jpg``), some tools drop extensions, some
keep full paths. Matching uses the file name's stem, so ``/photos/45/77/3228511372.jpg``,
``3228511372.jpg`` and ``3228511372`` all name the same image.
"""

from __future__ import annotations

import posixpath


def image_key(image_id: str) -> str:
    """Return the matching key of an image id: its base name without the extension."""
    name = posixpath.basename(image_id.strip().replace("\\", "/"))
    stem, dot, ext = name.rpartition(".")
    # Only strip a real image-like extension; ids such as "78841376@N00" have no dot.
    if dot and ext.lower() in {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic"}:
        return stem
    return name
