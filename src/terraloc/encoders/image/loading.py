"""Robust image loading with PIL + numpy: one function, per-file errors.

``load_image`` accepts a path, raw bytes, a PIL image or a numpy array and returns an RGB
``PIL.Image`` with the EXIF orientation applied. Problems (missing or unreadable file, zero
bytes, not an image, truncated data, more than :data:`MAX_PIXELS` pixels) raise
:class:`terraloc.errors.InputError` naming the file, so a batch can record the error and go on.

Handled formats: CMYK (converted through PIL), 16-bit greyscale/RGB (scaled to 8 bit by the
actual bit depth), palette and alpha images (alpha composited onto white), animated GIF/WebP
(first frame).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from terraloc.errors import InputError
from terraloc.inputs import IMAGE_EXTENSIONS

#: Decompression-bomb limit: images with more pixels are refused (100 megapixels).
MAX_PIXELS = 100_000_000

# PIL warns above ~89 MP and raises above ~179 MP; we apply our own 100 MP limit after opening.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

ImageSource = str | Path | bytes | Image.Image | np.ndarray


def _name(src: Any, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(src, str | Path):
        return str(src)
    if isinstance(src, bytes | bytearray):
        return "<bytes>"
    if isinstance(src, np.ndarray):
        return "<array>"
    return "<image>"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited on white, 16-bit scaled down)."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        else:
            maxv = float(arr.max()) if arr.size else 0.0
            bits = 16 if maxv > 255 or mode.startswith("I;16") else 8
            arr = arr / ((1 << bits) - 1) * 255.0
        g = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([g, g, g], axis=-1), "RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _from_array(arr: np.ndarray, name: str) -> Image.Image:
    """``(H, W)``, ``(H, W, 1|3|4)`` uint8/uint16/float arrays → RGB PIL image."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or a.size == 0:
        raise InputError(f"array of shape {a.shape} is not an image (expected HxW, HxWx3 or HxWx4)", path=name)
    if a.shape[0] * a.shape[1] > MAX_PIXELS:
        raise InputError(f"{a.shape[1]}x{a.shape[0]} pixels exceed the {MAX_PIXELS // 1_000_000} MP limit", path=name)
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.uint16:
        u8 = np.round(a.astype(np.float64) / 65535.0 * 255.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise InputError("array has non-finite pixel values", path=name)
        scale = 255.0 if float(a.max(initial=0.0)) <= 1.0 else 1.0
        u8 = np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
    else:
        u8 = np.clip(a, 0, 255).astype(np.uint8)
    if u8.ndim == 2:
        return Image.fromarray(np.stack([u8, u8, u8], axis=-1), "RGB")
    if u8.shape[-1] == 4:
        return _to_rgb(Image.fromarray(u8, "RGBA"))
    return Image.fromarray(np.ascontiguousarray(u8), "RGB")


def _decode(img: Image.Image, name: str) -> Image.Image:
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise InputError(
            f"{w}x{h} = {w * h / 1e6:.0f} megapixels exceed the {MAX_PIXELS // 1_000_000} MP limit "
            "(possible decompression bomb)",
            path=name,
        )
    if w == 0 or h == 0:
        raise InputError("image has zero width or height", path=name)
    try:
        img.load()
        oriented = ImageOps.exif_transpose(img)
        if oriented is not None:
            img = oriented
        return _to_rgb(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise _decode_error(exc, name) from None


def _decode_error(exc: BaseException, name: str) -> InputError:
    msg = str(exc) or type(exc).__name__
    if any(w in msg.lower() for w in ("truncated", "premature", "broken", "unexpected end")):
        return InputError(f"truncated or corrupt image data ({msg})", path=name)
    return InputError(f"cannot decode image: {msg}", path=name)


def load_image(src: ImageSource, *, name: str | None = None) -> Image.Image:
    """Load one image as 8-bit RGB with EXIF orientation applied.

    Args:
        src: a file path, encoded bytes, a PIL image or an ``(H, W[, C])`` array
            (uint8 0..255, uint16, or float in 0..1).
        name: how to refer to the image in error messages (default: the path).

    Returns:
        A fully decoded ``PIL.Image`` in mode ``"RGB"`` (independent of any open file).

    Raises:
        InputError: unreadable path, zero-byte file, not an image, truncated data, or more than
            :data:`MAX_PIXELS` pixels.
    """
    label = _name(src, name)
    if isinstance(src, np.ndarray):
        return _from_array(src, label)
    if isinstance(src, Image.Image):
        return _decode(src, label)
    if isinstance(src, bytes | bytearray):
        data = bytes(src)
    elif isinstance(src, str | Path):
        path = Path(src)
        if path.is_dir():
            raise InputError("is a folder, not an image file", path=label)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError("file not found", path=label) from None
        except PermissionError:
            raise InputError("permission denied", path=label) from None
        except OSError as exc:
            raise InputError(f"cannot read file: {exc.strerror or exc}", path=label) from None
    else:
        raise InputError(f"unsupported image input of type {type(src).__name__}", path=label)
    if len(data) == 0:
        raise InputError("empty file (0 bytes)", path=label)
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError("not an image file (format not recognised)", path=label) from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{exc} (possible decompression bomb)", path=label) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _decode_error(exc, label) from None
    return _decode(img, label)


def find_images(path: str | Path) -> list[Path]:
    """Image files under ``path`` (recursive, sorted, by extension); a file is returned as is.

    Raises:
        InputError: the path does not exist, or a folder holds no image files.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise InputError("no such file or folder", path=p)
    found = sorted(
        f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
    )
    if not found:
        raise InputError(f"folder contains no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})", path=p)
    return found
