"""Which strings were seen before, in 16 bytes a string: 128-bit keys in sorted runs.

What the driver keeps to find a repeated photo id or path among millions without holding the
strings (:mod:`terraloc.engine.stream`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def keys128(texts: Sequence[str]) -> NDArray[Any]:
    """128-bit keys (``V16``) of strings: a false repeat would need a BLAKE2b collision."""
    digests = (hashlib.blake2b(t.encode("utf-8", "surrogateescape"), digest_size=16).digest() for t in texts)
    return np.frombuffer(b"".join(digests), dtype="V16")


class KeySet:
    """Keys of the strings seen so far, each with an optional ``int`` (a line), in a few sorted runs
    whose sizes halve (merged like a binary counter): adding a chunk costs O(chunk · log N)
    lookups and each key is merged O(log N) times; 16 bytes a string (24 with the ``int``)."""

    def __init__(self) -> None:
        self.runs: list[tuple[NDArray[Any], NDArray[np.int64] | None]] = []

    def add(
        self, texts: Sequence[str], payload: Sequence[int] | None = None, *, within: bool = True
    ) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
        """Add ``texts``; returns which were seen before (in earlier chunks, or with ``within`` also
        earlier in this one) and, for those, the ``int`` of the first occurrence (-1 without)."""
        keys = keys128(texts)
        m = len(keys)
        pay = None if payload is None else np.asarray(payload, dtype=np.int64)
        seen = np.zeros(m, dtype=bool)
        first = np.full(m, -1, dtype=np.int64)
        for run_keys, run_pay in self.runs:
            pos = np.minimum(np.searchsorted(run_keys, keys), len(run_keys) - 1)
            hit = (run_keys[pos] == keys) & ~seen
            seen |= hit
            if run_pay is not None:
                first[hit] = run_pay[pos[hit]]
        order = np.argsort(keys, kind="stable")
        if within and m > 1:
            sk = keys[order]
            same = np.zeros(m, dtype=bool)
            same[1:] = sk[1:] == sk[:-1]
            head = order[np.maximum.accumulate(np.where(same, 0, np.arange(m)))]  # first of its equals
            later = same & ~seen[order]  # (a key already in a run was first seen there)
            seen[order[later]] = True
            if pay is not None:
                first[order[later]] = pay[head[later]]
        new = order[~seen[order]]
        if len(new):
            self.runs.append((keys[new], None if pay is None else pay[new]))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k1, p1), (k2, p2) = self.runs[-2], self.runs.pop()
            k = np.concatenate([k1, k2])
            p = None if p1 is None or p2 is None else np.concatenate([p1, p2])
            self.runs[-1] = (k, p)
            del k1, k2, p1, p2  # the merged run only
            if p is None:
                k.sort()  # in place: 32 bytes a key at the peak
            else:
                o = np.argsort(k, kind="stable")
                self.runs[-1] = (k[o], p[o])
        return seen, first
