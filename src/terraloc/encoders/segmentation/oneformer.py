"""OneFormer ADE20K semantic segmentation (the paper's provider) through ``transformers``.

For users who have a OneFormer ADE20K checkpoint on disk (e.g. a local copy of
``shi-labs/oneformer_ade20k_swin_large``: ``config.json``, weights, and the processor/tokenizer
files). Nothing is downloaded: loading uses ``local_files_only=True``.

OneFormer's ADE20K head predicts the 150 SceneParsing classes with ids 0..149 in the same order
as :data:`~terraloc.encoders.segmentation.classes.ADE20K_CLASSES`, so its output is used as is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from terraloc.encoders.segmentation.base import resize_map_nearest
from terraloc.encoders.segmentation.classes import NUM_CLASSES
from terraloc.errors import InputError, MissingResourceError


class OneFormerADE20KSegmenter:
    """Semantic segmentation with a local OneFormer ADE20K checkpoint.

    Args:
        model_dir: folder with the model (``config.json`` + safetensors weights) and its
            ``OneFormerProcessor`` files (image processor and CLIP tokenizer).
        device: torch device string.

    Raises:
        MissingResourceError: the folder or its files are missing.
        InputError: the checkpoint is unreadable or not a 150-class ADE20K model.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        import torch
        from transformers import OneFormerForUniversalSegmentation, OneFormerProcessor

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise MissingResourceError(
                f"{path}: no OneFormer checkpoint here (config.json missing); copy a OneFormer ADE20K model "
                "(e.g. shi-labs/oneformer_ade20k_swin_large, fetched with `hf download`) into this folder"
            )
        try:
            self.model = OneFormerForUniversalSegmentation.from_pretrained(path, local_files_only=True).eval()
            self.processor = OneFormerProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise InputError(f"cannot load OneFormer checkpoint ({first[:200]})", path=path) from None
        n = len(self.model.config.id2label)
        if n != NUM_CLASSES:
            raise InputError(f"not an ADE20K OneFormer model: {n} classes, expected {NUM_CLASSES}", path=path)
        self.model.to(device)
        self.device = torch.device(device)
        self.provider_id = f"oneformer-ade20k:{path.name}"
        h = hashlib.sha256()
        for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
        self.weights_hash = h.hexdigest()

    def segment(self, image: Image.Image) -> np.ndarray:
        """Segment one photo.

        Returns:
            ``(H, W)`` uint8 map of ADE20K ids 0..149, the photo's size.
        """
        import torch

        img = image.convert("RGB")
        inputs = self.processor(images=[img], task_inputs=["semantic"], return_tensors="pt")
        with torch.no_grad():
            out = self.model(
                pixel_values=inputs["pixel_values"].to(self.device),
                pixel_mask=inputs["pixel_mask"].to(self.device) if "pixel_mask" in inputs else None,
                task_inputs=inputs["task_inputs"].to(self.device),
            )
        seg = self.processor.post_process_semantic_segmentation(out, target_sizes=[(img.height, img.width)])[0]
        arr = seg.cpu().numpy().astype(np.int64)
        arr = np.clip(arr, 0, NUM_CLASSES - 1).astype(np.uint8)
        return resize_map_nearest(arr, (img.height, img.width))
