"""``--engine ray`` for reference-database builds: the embedding step on Ray Data.

The photos' paths become a Ray dataset; a pool of actors, each holding the backbone, decodes,
preprocesses and embeds batches (``map_batches``); results come back in input order. With no
Ray cluster running, the engine starts a local one limited to ``workers`` CPUs and stops it after
the process; on a multi-node cluster (``ray start --head`` / ``RAY_ADDRESS``) the same code spreads the
work over the nodes, which is how collections the size of MP-16 (4.7M photos) are meant to be built.

The backbone and the per-image arithmetic are the same as the local engine's, so both give the same
database (up to float rounding of batched matrix products).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


class _Embedder:
    """Ray actor: decode + preprocess + embed one batch of paths (errors per image)."""

    def __init__(self, backbone: Any) -> None:
        import torch

        torch.set_num_threads(1)
        self.backbone = backbone

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        import torch

        from terraloc.encoders.image.batching import describe_error
        from terraloc.encoders.image.loading import load_image

        idx = [int(i) for i in batch["i"]]
        pixels, good, errors = [], [], []
        for i, path in zip(idx, batch["path"], strict=True):
            try:
                pixels.append(self.backbone.preprocess(load_image(str(path))))
                good.append(i)
                errors.append("")
            except Exception as exc:  # one bad photo must not stop the batch
                errors.append(describe_error(exc))
        dim = int(self.backbone.dim)
        emb = np.zeros((len(idx), dim), dtype=np.float32)
        if pixels:
            with torch.no_grad():
                vec = self.backbone.embed_pixels(torch.from_numpy(np.stack(pixels))).numpy().astype(np.float32)
            pos = {i: k for k, i in enumerate(idx)}
            for j, i in enumerate(good):
                emb[pos[i]] = vec[j]
        return {"i": np.asarray(idx, dtype=np.int64), "emb": emb, "error": np.asarray(errors, dtype=object)}


def embed_ray(
    paths: Sequence[str],
    backbone: Any,
    *,
    batch_size: int,
    workers: int,
    on_batch: Callable[[list[int], NDArray[np.float32], dict[int, str]], None] | None,
) -> tuple[NDArray[np.float32], NDArray[np.bool_], dict[int, str]]:
    """Embed image files on Ray Data; same contract as the local engine (see ``refdb.embed_photos``)."""
    from terraloc.extras import require

    ray = require("ray", "ray")
    require("ray.data", "ray")

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        else:
            ray.init(
                num_cpus=max(1, workers),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        # One cluster for the whole build (embed_ray runs once per shard); stopped at exit.
        atexit.register(ray.shutdown)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    n = len(paths)
    ds = ray.data.from_items([{"i": i, "path": str(p)} for i, p in enumerate(paths)])
    out = ds.map_batches(
        _Embedder,
        fn_constructor_kwargs={"backbone": backbone},
        batch_size=batch_size,
        concurrency=max(1, workers),
        num_cpus=1,
        batch_format="numpy",
    )
    emb = np.zeros((n, int(backbone.dim)), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    for b in out.iter_batches(batch_size=batch_size, batch_format="numpy"):
        idx = [int(i) for i in b["i"]]
        errs = {i: str(e) for i, e in zip(idx, b["error"], strict=True) if str(e)}
        good = [k for k, i in enumerate(idx) if i not in errs]
        emb[[idx[k] for k in good]] = b["emb"][good]
        ok[[idx[k] for k in good]] = True
        errors.update(errs)
        if on_batch is not None:
            on_batch([idx[k] for k in good], b["emb"][good], errs)
    return emb, ok, errors
