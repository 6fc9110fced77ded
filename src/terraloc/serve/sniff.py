"""Content sniffing: decide what an upload is from its first bytes, never from its name.

Only formats that PIL decodes without plugins are accepted. A recognised non-image (PDF, ZIP,
HTML, ...) or an image format PIL cannot read here (HEIC/AVIF) is named in the error message.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

#: ``(magic prefix, offset, format name)``; formats the service accepts.
_IMAGE_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)

#: Well-known non-image or unsupported types, named in the 415 message.
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"<!DOCTYPE", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"<?xml", "XML (SVG is not accepted)"),
    (b"<svg", "SVG (vector images are not accepted)"),
    (b"\x00\x00\x00\x18ftypmp4", "an MP4 video"),
    (b"{", "JSON text"),
)


class UnsupportedMedia(ValueError):
    """The bytes are not an image format the service accepts (HTTP 415)."""


class UnprocessableImage(ValueError):
    """The bytes claim to be an image but cannot be used (HTTP 422): truncated, corrupt, too many pixels."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an accepted image says: format and size in pixels."""

    format: str
    width: int
    height: int


def sniff_format(data: bytes) -> str:
    """Return the image format of ``data`` from its magic bytes.

    Raises:
        UnsupportedMedia: empty data, a known non-image type, HEIC/AVIF, or unrecognised bytes.
    """
    if not data:
        raise UnsupportedMedia("empty upload (0 bytes)")
    for magic, offset, fmt in _IMAGE_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("latin-1", "replace")
        if brand in {"heic", "heix", "hevc", "mif1", "msf1", "avif", "avis"}:
            raise UnsupportedMedia(f"HEIC/AVIF images (brand '{brand}') are not supported; convert to JPEG or PNG")
    head = data[:64].lstrip().lower()
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic.lower()):
            raise UnsupportedMedia(f"upload is {what}, not an image (accepted: JPEG, PNG, GIF, WEBP, BMP, TIFF)")
    raise UnsupportedMedia("upload is not a recognised image format (accepted: JPEG, PNG, GIF, WEBP, BMP, TIFF)")


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Sniff ``data`` and read its header (no pixel decoding) to check the pixel limit.

    Args:
        data: the uploaded bytes.
        max_pixels: largest accepted ``width * height``.

    Raises:
        UnsupportedMedia: not an accepted image format.
        UnprocessableImage: the header cannot be parsed, or the image has more than ``max_pixels`` pixels.
    """
    fmt = sniff_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise UnprocessableImage(f"{exc} (decompression bomb refused)") from None
    except Exception as exc:  # PIL raises many types for corrupt headers
        raise UnprocessableImage(f"truncated or corrupt {fmt} data ({exc})") from None
    if width <= 0 or height <= 0:
        raise UnprocessableImage("image has zero width or height")
    if width * height > max_pixels:
        raise UnprocessableImage(
            f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
            f"{max_pixels / 1e6:.1f} (decompression bomb refused)"
        )
    return ImageInfo(fmt, width, height)
