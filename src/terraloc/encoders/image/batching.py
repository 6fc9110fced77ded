"""Decode and preprocess images in worker threads and feed a backbone in batches.

:func:`iter_pixel_batches` is the one loop every bulk job uses (``terraloc predict``,
``terraloc db build``): JPEG decoding and resizing run in a thread pool (PIL releases the GIL),
the backbone runs in the calling thread, and a bad image becomes a per-item error instead of
stopping the batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from terraloc.encoders.image.loading import load_image
from terraloc.errors import TerralocError


@dataclass
class PixelBatch:
    """One batch: ``indices`` of the items that decoded (positions in the input sequence), their
    ``pixels`` ``(B, 3, H, W)`` (or ``(B, 10, 3, H, W)`` for ten-crop) and ``errors`` {index: message}
    for the items that did not."""

    indices: list[int]
    pixels: torch.Tensor
    errors: dict[int, str] = field(default_factory=dict)
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)


def _prepare(src: Any, fn: Callable[[Image.Image], NDArray[np.float32]]) -> tuple[NDArray[np.float32], tuple[int, int]]:
    img = load_image(src)
    return fn(img), img.size


def describe_error(exc: BaseException) -> str:
    """One-line message for a per-item failure."""
    if isinstance(exc, TerralocError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def iter_pixel_batches(
    sources: Iterable[Any],
    transform: Callable[[Image.Image], NDArray[np.float32]],
    batch_size: int = 16,
    workers: int = 2,
) -> Iterator[PixelBatch]:
    """Decode + preprocess ``sources`` (paths, bytes, PIL images, arrays) in threads, in order.

    Args:
        sources: the images — any iterable (a generator is consumed lazily, in the calling
            thread, a bounded window ahead of the batches yielded).
        transform: PIL image → ``(3, H, W)`` (or ``(10, 3, H, W)``) float32 array.
        batch_size: images per yielded batch.
        workers: decoding threads (0 = decode in the calling thread).

    Yields:
        :class:`PixelBatch` objects covering every index exactly once (decoded or errored);
        indices count the items of ``sources`` from 0.
    """

    def one(i: int, src: Any) -> tuple[int, Any, Any, str | None]:
        try:
            arr, size = _prepare(src, transform)
            return i, arr, size, None
        except Exception as exc:  # per-item failure: recorded, the batch goes on
            return i, None, None, describe_error(exc)

    def emit(results: Iterable[tuple[int, Any, Any, str | None]]) -> Iterator[PixelBatch]:
        idx: list[int] = []
        arrs: list[NDArray[np.float32]] = []
        errs: dict[int, str] = {}
        sizes: dict[int, tuple[int, int]] = {}
        count = 0
        for i, arr, size, err in results:
            count += 1
            if err is not None:
                errs[i] = err
            else:
                idx.append(i)
                arrs.append(arr)
                sizes[i] = size
            if count == batch_size:
                yield PixelBatch(idx, _stack(arrs), errs, sizes)
                idx, arrs, errs, sizes, count = [], [], {}, {}, 0
        if count:
            yield PixelBatch(idx, _stack(arrs), errs, sizes)

    items = enumerate(sources)
    if workers <= 0:
        yield from emit(one(i, src) for i, src in items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="terraloc-decode") as pool:
        # Bounded look-ahead: at most a few batches decoded ahead of the backbone.
        window = max(batch_size * 2, workers * 2)
        pending: deque[Future[tuple[int, Any, Any, str | None]]] = deque()

        def fill() -> None:
            while len(pending) < window:
                nxt = next(items, None)
                if nxt is None:
                    return
                pending.append(pool.submit(one, *nxt))

        def results() -> Iterator[tuple[int, Any, Any, str | None]]:
            fill()
            while pending:
                res = pending.popleft().result()
                fill()
                yield res

        yield from emit(results())


def _stack(arrs: list[NDArray[np.float32]]) -> torch.Tensor:
    if not arrs:
        return torch.zeros(0)
    return torch.from_numpy(np.stack(arrs))
