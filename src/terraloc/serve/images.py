"""Decode checked upload bytes into RGB images (in the inference worker, off the event loop)."""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from terraloc.errors import InputError
from terraloc.serve.sniff import UnprocessableImage


def decode_upload(data: bytes, name: str) -> Image.Image:
    """Decode ``data`` to an 8-bit RGB ``PIL.Image`` with EXIF orientation applied.

    Uses the same loader as ``terraloc predict`` (``terraloc.encoders.image.loading.load_image``)
    when it is installed, so the service and the command line see identical pixels.

    Raises:
        UnprocessableImage: truncated or corrupt data (HTTP 422).
    """
    try:
        from terraloc.encoders.image.loading import load_image
    except ImportError:  # pragma: no cover - the loader ships with the prediction pipeline
        load_image = None
    if load_image is not None:
        try:
            return load_image(data, name=name)
        except InputError as exc:
            raise UnprocessableImage(getattr(exc, "problem", str(exc))) from None
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        img.load()
        return (ImageOps.exif_transpose(img) or img).convert("RGB")
    except Exception as exc:
        raise UnprocessableImage(f"truncated or corrupt image data ({exc})") from None
