"""A job's plan: fixed-size partitions of the inputs and the fingerprint that makes resuming safe.

A partition is a contiguous range ``[lo, hi)`` of the input order with a stable id ``pid``; its
output is one part file named by ``pid``, so writing it twice (a retried worker, a resumed run)
gives the same file. The partition size depends only on the number of inputs (or the user's
``part_size``), never on the number of workers, so the same command always cuts the same parts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from terraloc.engine.inputs import WorkItems
from terraloc.errors import InputError
from terraloc.io import atomic_write_text

JOB_FILE = "job.json"


@dataclass(frozen=True)
class Partition:
    """Inputs ``[lo, hi)`` (positions in the input order) processed as one unit with id ``pid``."""

    pid: int
    lo: int
    hi: int

    def __len__(self) -> int:
        return self.hi - self.lo


def default_part_size(n: int) -> int:
    """Rows per part: about 64 parts, each of 16 to 1,024 photos (depends on ``n`` only)."""
    return int(min(1024, max(16, -(-n // 64))))


def partitions(n: int, part_size: int) -> list[Partition]:
    """Cut ``n`` inputs into consecutive partitions of ``part_size`` (the last may be shorter)."""
    if part_size < 1:
        raise InputError(f"must be at least 1, got {part_size}", field="part-size")
    return [Partition(k, lo, min(n, lo + part_size)) for k, lo in enumerate(range(0, n, part_size))]


def inputs_digest(items: WorkItems) -> str:
    """SHA-256 (16 hex) of the ids, paths and coordinates, in order."""
    h = hashlib.sha256()
    for i, p in zip(items.ids, items.paths, strict=True):
        h.update(i.encode())
        h.update(b"\0")
        h.update(p.encode())
        h.update(b"\n")
    if items.coords is not None:
        h.update(np.ascontiguousarray(items.coords, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def job_record(kind: str, model: dict[str, Any], items: WorkItems, part_size: int) -> dict[str, Any]:
    """What identifies a run: the kind of work, the model description, the inputs and the cut."""
    return {
        "kind": kind,
        "model": model,
        "n": len(items),
        "inputs": inputs_digest(items),
        "part_size": part_size,
    }


def check_or_write_job(out: Path, job: dict[str, Any]) -> bool:
    """Write ``out/job.json`` for a new run, or check that an unfinished run here is the same job.

    Returns:
        True when a previous run of the same job was found (its finished parts will be reused).

    Raises:
        InputError: the folder holds another job (other inputs, model or kind).
    """
    path = out / JOB_FILE
    if path.exists():
        try:
            prev = json.loads(path.read_text())
        except ValueError:
            prev = None
        # JSON round trip so tuples and lists compare equal
        if prev != json.loads(json.dumps(job)):
            what = "other inputs"
            if isinstance(prev, dict):
                for key, label in (("kind", "another kind of job"), ("model", "another model"), ("part_size", "")):
                    if prev.get(key) != job[key]:
                        what = label or f"another --part-size ({prev.get(key)})"
                        break
            raise InputError(f"this folder holds a run with {what}; use another --out or delete the folder", path=out)
        return True
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(job, indent=1))
    return False
