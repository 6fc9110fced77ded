"""DeepLabv3 + MobileNetV2 trained on ADE20K, as the offline TFLite model in the shared folder.

Model: ``models/ade20k/deeplabv3_mobilenetv2_ade20k.tflite`` (TF-Hub, Apache-2.0). Input
``1x513x513x3`` float32 in ``[-1, 1]``; output ``1x513x513x151`` class scores; ``labels.txt``
lists 151 classes where 0 is ``others`` and 1..150 are the ADE20K SceneParsing classes.

Class mapping (fixed, documented in docs/fusion.md): TFLite class ``k`` in 1..150 becomes
terraloc id ``k - 1`` (the OneFormer / Hugging Face ADE20K convention, ``0 = wall``); TFLite
class 0 (``others``) becomes :data:`IGNORE_ID` (255). The label file is checked against the
canonical class names, so a model whose classes are in another order is refused.

Geometry: the photo is resized (bilinear, aspect kept) so its longer side is 513 px, padded to
513x513 with 0 (mid-grey in ``[-1, 1]``, as DeepLab pads with the mean pixel), segmented, the
padding is cut off and the map is resized back to the photo's size by nearest neighbour.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from terraloc.encoders.segmentation.base import resize_map_nearest
from terraloc.encoders.segmentation.classes import ADE20K_CLASSES, IGNORE_ID, NUM_CLASSES
from terraloc.errors import InputError, MissingResourceError

MODEL_FILE = "deeplabv3_mobilenetv2_ade20k.tflite"
LABELS_FILE = "labels.txt"

#: TFLite class index (0..150) -> terraloc id (0..149, 255 for "others").
TFLITE_TO_TERRALOC = np.array([IGNORE_ID, *range(NUM_CLASSES)], dtype=np.uint8)


def _default_dir() -> Path:
    from terraloc.config import shared_path

    return shared_path("models", "ade20k")


def read_tflite_labels(path: Path) -> list[str]:
    """Read ``labels.txt`` (``index<whitespace>name`` per line) and check it against ADE20K's order.

    Raises:
        MissingResourceError: the file is missing.
        InputError: wrong number of lines, bad indices or class names out of order.
    """
    if not path.is_file():
        raise MissingResourceError(f"{path}: ADE20K label file not found (expected beside the TFLite model)")
    names: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names):
            raise InputError("expected '<index> <name>' with consecutive indices from 0", path=path, row=lineno)
        names.append(parts[1].strip())
    if len(names) != NUM_CLASSES + 1:
        raise InputError(f"expected {NUM_CLASSES + 1} classes (0 = others), found {len(names)}", path=path)
    for i, name in enumerate(names[1:], start=1):
        canonical = ADE20K_CLASSES[i - 1]
        if name.split()[0].lower() != canonical.split()[0].lower():
            raise InputError(f"class {i} is {name!r}, expected ADE20K class {canonical!r}", path=path, row=i + 1)
    return names


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TFLiteADE20KSegmenter:
    """ADE20K segmentation with the offline DeepLabv3-MobileNetV2 TFLite model (``ai-edge-litert``).

    Args:
        model_path: the ``.tflite`` file (default: the shared ``models/ade20k/`` copy).
        labels_path: its ``labels.txt`` (default: beside the model).
        num_threads: interpreter threads (default: ``min(4, cpu count)``).

    Raises:
        MissingResourceError: model or label file missing.
        InputError: a corrupt/unsupported model file or a label file that does not match ADE20K.
    """

    provider_id = "deeplabv3-mobilenetv2-ade20k-tflite"

    def __init__(
        self,
        model_path: str | Path | None = None,
        labels_path: str | Path | None = None,
        num_threads: int | None = None,
    ) -> None:
        model = Path(model_path) if model_path is not None else _default_dir() / MODEL_FILE
        if not model.is_file():
            raise MissingResourceError(
                f"{model}: TFLite ADE20K model not found (it ships in the shared folder as models/ade20k/{MODEL_FILE}; "
                "set TERRALOC_SHARED or pass --model)"
            )
        labels = Path(labels_path) if labels_path is not None else model.parent / LABELS_FILE
        self.labels = read_tflite_labels(labels)
        self.model_path = model
        self.weights_hash = file_sha256(model)
        from terraloc.extras import require

        Interpreter = require("ai_edge_litert.interpreter", "segment").Interpreter

        threads = num_threads or min(4, os.cpu_count() or 1)
        from terraloc.quiet import native_stderr_filtered

        try:
            with native_stderr_filtered():  # LiteRT prints an INFO line about its XNNPACK delegate
                self._interp = Interpreter(model_path=str(model), num_threads=threads)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise InputError(f"not a valid TFLite model ({msg})", path=model) from None
        inp = self._interp.get_input_details()
        out = self._interp.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise InputError("expected a model with one input and one output", path=model)
        in_shape, out_shape = tuple(int(s) for s in inp[0]["shape"]), tuple(int(s) for s in out[0]["shape"])
        if len(in_shape) != 4 or in_shape[0] != 1 or in_shape[3] != 3 or inp[0]["dtype"] != np.float32:
            raise InputError(f"unexpected input {in_shape} {inp[0]['dtype']}, expected 1xHxWx3 float32", path=model)
        if out_shape != (*in_shape[:3], NUM_CLASSES + 1):
            raise InputError(f"unexpected output {out_shape}, expected 1x{in_shape[1]}x{in_shape[2]}x151", path=model)
        self._in_index, self._out_index = int(inp[0]["index"]), int(out[0]["index"])
        self.input_size = (in_shape[1], in_shape[2])

    def segment_raw(self, image: Image.Image) -> np.ndarray:
        """TFLite class indices (0..150, 0 = others) at the model's own resolution of the photo.

        Returns:
            ``(h, w)`` uint8 map, ``h, w`` = the photo scaled so its longer side fits 513 px.
        """
        img = image.convert("RGB")
        H, W = self.input_size
        scale = min(H / img.height, W / img.width)
        nh, nw = max(1, min(H, round(img.height * scale))), max(1, min(W, round(img.width * scale)))
        resized = np.asarray(img.resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
        x = np.zeros((1, H, W, 3), dtype=np.float32)
        x[0, :nh, :nw] = resized / 127.5 - 1.0
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        scores = self._interp.get_tensor(self._out_index)[0, :nh, :nw]
        return scores.argmax(axis=-1).astype(np.uint8)

    def segment(self, image: Image.Image) -> np.ndarray:
        """Segment one photo.

        Returns:
            ``(H, W)`` uint8 map of terraloc ADE20K ids (0..149, 255 = others), the photo's size.
        """
        raw = self.segment_raw(image)
        return resize_map_nearest(TFLITE_TO_TERRALOC[raw], (image.height, image.width))
