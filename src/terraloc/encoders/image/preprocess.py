"""CLIP-style preprocessing with PIL + numpy (no torchvision).

Matches ``transformers.CLIPImageProcessor`` (its PIL backend): bicubic resize of the shortest
edge to ``size`` (long edge ``int(size * long / short)``), centre crop ``crop`` x ``crop``
(top/left offsets ``(H - crop) // 2``, zero padding if smaller), rescale by 1/255 in float64,
normalise with the CLIP mean/std. Output is ``(3, crop, crop)`` float32, channels first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Resize / centre-crop / normalise settings.

    Attributes:
        size: target length of the shortest edge after resizing, pixels.
        crop: side of the square centre crop, pixels.
        mean, std: per-channel normalisation in 0..1 units.
        resample: PIL resampling filter (3 = bicubic, as CLIP).
    """

    size: int = 224
    crop: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: int = 3
    _mean: NDArray[np.float32] = field(init=False, repr=False, compare=False)
    _std: NDArray[np.float32] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_mean", np.asarray(self.mean, dtype=np.float32)[:, None, None])
        object.__setattr__(self, "_std", np.asarray(self.std, dtype=np.float32)[:, None, None])

    @classmethod
    def from_hf_config(cls, cfg: dict) -> Preprocess:
        """Settings from a Hugging Face ``preprocessor_config.json`` dictionary."""
        size = cfg.get("size", 224)
        if isinstance(size, dict):
            size = size.get("shortest_edge") or size.get("height") or 224
        crop = cfg.get("crop_size", size)
        if isinstance(crop, dict):
            crop = crop.get("height") or size
        return cls(
            size=int(size),
            crop=int(crop),
            mean=tuple(cfg.get("image_mean", CLIP_MEAN)),  # type: ignore[arg-type]
            std=tuple(cfg.get("image_std", CLIP_STD)),  # type: ignore[arg-type]
            resample=int(cfg.get("resample", 3)),
        )

    def resize(self, img: Image.Image, size: int | None = None) -> Image.Image:
        """Resize so the shortest edge is ``size`` (default ``self.size``), keeping the aspect ratio."""
        s = self.size if size is None else size
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = s, int(s * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) == (w, h):
            return img
        return img.resize((new_w, new_h), resample=Image.Resampling(self.resample), reducing_gap=None)

    def _normalise(self, arr: NDArray[np.uint8]) -> NDArray[np.float32]:
        """``(H, W, 3)`` uint8 → ``(3, H, W)`` float32 normalised."""
        chw = np.moveaxis(arr, -1, 0)
        x = (chw.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
        return ((x - self._mean) / self._std).astype(np.float32)

    def _crop_at(self, arr: NDArray[np.uint8], top: int, left: int) -> NDArray[np.uint8]:
        c = self.crop
        h, w = arr.shape[:2]
        if h >= c and w >= c:
            return arr[top : top + c, left : left + c]
        out = np.zeros((max(h, c), max(w, c), 3), dtype=np.uint8)
        tp, lp = (max(h, c) - h + 1) // 2, (max(w, c) - w + 1) // 2
        out[tp : tp + h, lp : lp + w] = arr
        h2, w2 = out.shape[:2]
        return out[(h2 - c) // 2 : (h2 - c) // 2 + c, (w2 - c) // 2 : (w2 - c) // 2 + c]

    def __call__(self, img: Image.Image) -> NDArray[np.float32]:
        """One RGB image → ``(3, crop, crop)`` float32 pixel values."""
        arr = np.asarray(self.resize(img.convert("RGB")), dtype=np.uint8)
        h, w = arr.shape[:2]
        return self._normalise(self._crop_at(arr, (h - self.crop) // 2, (w - self.crop) // 2))

    def ten_crop(self, img: Image.Image) -> NDArray[np.float32]:
        """Ten views: four corners + centre and their mirror images → ``(10, 3, crop, crop)``.

        The image is first resized so its shortest edge is ``round(crop * 256 / 224)`` (the
        usual ten-crop scale), so the corner crops see different content from the centre.
        """
        big = round(self.crop * 256 / 224)
        arr = np.asarray(self.resize(img.convert("RGB"), big), dtype=np.uint8)
        h, w = arr.shape[:2]
        c = self.crop
        offsets = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
        crops = [self._crop_at(arr, t, lft) for t, lft in offsets]
        crops += [np.ascontiguousarray(cr[:, ::-1]) for cr in crops]
        return np.stack([self._normalise(cr) for cr in crops])

    def batch(self, images: list[Image.Image]) -> torch.Tensor:
        """``N`` images → ``(N, 3, crop, crop)`` float32 tensor."""
        if not images:
            return torch.zeros(0, 3, self.crop, self.crop)
        return torch.from_numpy(np.stack([self(im) for im in images]))
