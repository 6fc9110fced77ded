"""Run an image backbone's ``features`` with ONNX Runtime (optional extra: ``pip install terraloc[onnx]``).

Exported once with ``torch.onnx.export`` (dynamo exporter, dynamic batch size) to a file; the
session uses the CPU execution provider with as many intra-op threads as torch uses, so timings
compare like with like. Used by ``terraloc bench predict`` to say whether ONNX Runtime speeds the
backbone up on this machine.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray


class _Features(torch.nn.Module):
    """Wrap ``backbone.features`` as a module's ``forward`` (what the exporter traces)."""

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(pixels)  # type: ignore[no-any-return]


def export_features(backbone: Any, path: str | Path, image_size: int) -> Path:
    """Export ``backbone.features``: ``(N, 3, S, S)`` float32 pixels → ``(N, D)`` features, to ``path``.

    The batch dimension is dynamic; ``image_size`` ``S`` is fixed (positional embeddings depend on it).
    """
    from terraloc.extras import require

    require("onnx", "onnx")
    require("onnxscript", "onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    # The exporter warns about every torchvision operator it cannot register (we never use them);
    # quieten it for this call only, so the caller's logging configuration is left as it was.
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    # The exporter reports its steps on stdout; keep stdout for the command's own output.
    with (
        warnings.catch_warnings(),
        torch.no_grad(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.ExitStack() as restore,
    ):
        restore.callback(onnx_log.setLevel, level)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Features(backbone).eval(),
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["features"],
            dynamic_shapes={"pixels": {0: batch}},
            dynamo=True,
            external_data=True,
            optimize=True,
            verbose=False,
        )
    return path


class OnnxFeatures:
    """``features(pixels)`` backed by an ONNX Runtime CPU session (same contract as the backbone's)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from terraloc.extras import require

        ort = require("onnxruntime", "onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def features(self, pixels: torch.Tensor | NDArray[np.float32]) -> torch.Tensor:
        """``(N, 3, S, S)`` pixel values → ``(N, D)`` float32 features."""
        x = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
        (out,) = self.session.run(["features"], {"pixels": np.ascontiguousarray(x, dtype=np.float32)})
        return torch.from_numpy(out)
