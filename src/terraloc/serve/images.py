"""Decode checked upload bytes into RGB images (in the inference worker, off the event loop)."""

from __future__ import annotations

from PIL import Image

from terraloc.encoders.image.loading import load_image
from terraloc.errors import InputError
from terraloc.serve.sniff import UnprocessableImage


def decode_upload(data: bytes, name: str) -> Image.Image:
    """Decode ``data`` to an 8-bit RGB ``PIL.Image`` with EXIF orientation applied.

    Uses the loader of ``terraloc predict`` (``terraloc.encoders.image.loading.load_image``), so
    the service and the command line see identical pixels (CMYK, 16-bit, alpha, animated GIF
    first frame, EXIF orientation).

    Raises:
        UnprocessableImage: truncated or corrupt data (HTTP 422).
    """
    try:
        return load_image(data, name=name)
    except InputError as exc:
        raise UnprocessableImage(exc.problem) from None
