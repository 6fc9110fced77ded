"""``terraloc bench fusion``: time and memory of a fused training step and the inference overhead of fusion.

Per backbone spec (:func:`terraloc.models.fused_encoder.make_clip`): one warm-up and ``steps`` timed
training steps (backbone in the loop, last block trainable, fusion and a geocell head) on random
pixels and maps; then single-image inference of the backbone alone vs the fusion module on its
tokens; optionally TFLite segmentation of one shared photo.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def bench_fusion(
    specs: Sequence[str] = ("tiny", "vit-l-14-336"),
    *,
    blocks: int = 3,
    batch_size: int = 2,
    steps: int = 3,
    reps: int = 3,
    cells: str = "cells_50_5000",
    segment: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Run the benchmark; returns the ``--json`` object: ``threads``, ``cpu_count``, ``tflite_segment_ms``,
    ``rows``."""
    from terraloc.models.fused_encoder import FusedImageEncoder, make_clip
    from terraloc.models.fusion import FusionConfig
    from terraloc.models.fusion_train import GeocellClassifier, load_cell_centres, make_optimizer, train_step

    centres = load_cell_centres(cells)
    rows: list[dict[str, Any]] = []
    for spec in specs:
        log(f"benchmarking {spec} ...")
        enc = FusedImageEncoder(make_clip(spec), FusionConfig(num_blocks=blocks))
        head = GeocellClassifier(centres, enc.fusion.cfg.out_dim)
        opt = make_optimizer(enc, head)
        S = enc.crop
        g = torch.Generator().manual_seed(0)
        px = torch.randn(batch_size, 3, S, S, generator=g)
        seg = torch.randint(0, 151, (batch_size, S, S), generator=g)
        labels = torch.randint(0, len(centres), (batch_size,), generator=g)
        train_step(enc, head, opt, px, seg, labels)  # warm-up (allocations, optimizer state)
        stats = [train_step(enc, head, opt, px, seg, labels) for _ in range(steps)]
        info = enc.describe()
        trainable = (
            info["backbone_trainable"]
            + sum(p.numel() for p in enc.fusion.parameters())
            + sum(p.numel() for p in head.parameters())
        )
        # Inference, one image: backbone alone (tokens + post-LN + projection-sized matmul) vs + fusion.
        enc.eval()
        vis = enc.backbone.vision
        proj = torch.nn.Linear(enc.backbone.width, 768, bias=False)
        x1, s1 = px[:1], seg[:1]
        t_bb, t_fu = [], []
        with torch.no_grad():
            tokens = vis(pixel_values=x1).last_hidden_state
            enc.fusion(s1, tokens)
            for _ in range(reps):
                t0 = time.perf_counter()
                out = vis(pixel_values=x1)
                proj(out.pooler_output)
                t1 = time.perf_counter()
                enc.fusion(s1, out.last_hidden_state)
                t2 = time.perf_counter()
                t_bb.append(t1 - t0)
                t_fu.append(t2 - t1)
        rows.append(
            {
                "backbone": spec,
                "image_size": S,
                "clip_tokens": int(tokens.shape[1]),
                "clip_width": enc.backbone.width,
                "fusion_blocks": blocks,
                "batch_size": batch_size,
                "train_step_s": round(float(np.median([s.seconds for s in stats])), 3),
                "train_step_peak_rss_delta_mib": round(max(s.peak_rss_delta_mib for s in stats), 1),
                "process_peak_rss_mib": round(max(s.peak_rss_mib for s in stats), 1),
                "trainable_params": int(trainable),
                "backbone_params": int(info["backbone_params"]),
                "fusion_params": int(info["fusion_params"]),
                "infer_backbone_ms": round(1000 * float(np.median(t_bb)), 2),
                "infer_fusion_ms": round(1000 * float(np.median(t_fu)), 2),
                "fusion_overhead_pct": round(100 * float(np.median(t_fu)) / float(np.median(t_bb)), 1),
            }
        )
        del enc, head, opt
    return {
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "tflite_segment_ms": _segment_ms(reps) if segment else None,
        "rows": rows,
    }


def _segment_ms(reps: int) -> float:
    """Median milliseconds of TFLite segmentation of the first shared Im2GPS3k photo (after a warm-up)."""
    from terraloc.config import shared_path
    from terraloc.encoders.segmentation import load_image, load_segmenter

    seg_model = load_segmenter("tflite")
    folder = shared_path("data", "photos", "im2gps3k_dev")
    img = load_image(sorted(folder.glob("*.jpg"))[0])
    seg_model.segment(img)
    ts = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        seg_model.segment(img)
        ts.append(time.perf_counter() - t0)
    return round(1000 * float(np.median(ts)), 1)
