"""Which image backbone a trained head's embeddings came from, and the check that refuses another.

A backbone is described by :meth:`terraloc.encoders.image.ImageBackbone.describe`:
``{"id": model id, "hash": SHA-256 prefix of its weight files, "dim": embedding width}``.
``terraloc embed`` writes it into the shard manifest (``"backbone"``), the trainer and
``terraloc fusion train`` copy it into every checkpoint (``"backbone"``, a JSON string), and the
prediction heads refuse a different backbone with :func:`check_backbone`.

Checkpoints made before the record existed carry none: they are accepted with a
:class:`UnrecordedBackboneWarning` (a Python warning; front ends may show it), since the
dimension check still catches the worst mismatch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from terraloc.errors import InputError


class UnrecordedBackboneWarning(UserWarning):
    """A checkpoint does not record its training backbone (made before terraloc recorded it)."""


def backbone_record(desc: Any) -> dict[str, Any] | None:
    """Normalise a stored backbone description (dict or JSON string) to ``{"id", "hash", "dim"}`` or ``None``."""
    if desc is None or desc == "":
        return None
    if isinstance(desc, str):
        try:
            desc = json.loads(desc)
        except ValueError:
            return None
    if not isinstance(desc, dict) or not desc.get("id"):
        return None
    dim = desc.get("dim")
    return {"id": str(desc["id"]), "hash": str(desc.get("hash") or ""), "dim": int(dim) if dim else None}


def same_backbone(recorded: dict[str, Any], actual: dict[str, Any]) -> bool:
    """Equal weights: hashes equal when both are known, else ids equal; dimensions equal when both known."""
    if recorded.get("dim") and actual.get("dim") and int(recorded["dim"]) != int(actual["dim"]):
        return False
    rh, ah = recorded.get("hash") or "", actual.get("hash") or ""
    if rh and ah:
        return bool(rh == ah)
    return bool(rh == ah and str(recorded.get("id")) == str(actual.get("id")))


def check_backbone(recorded: Any, actual: dict[str, Any], checkpoint: str | Path, what: str = "checkpoint") -> None:
    """Refuse ``actual`` (a backbone's ``describe()``) when it is not the ``recorded`` training backbone.

    Args:
        recorded: the checkpoint's backbone record (dict, JSON string or ``None``).
        actual: ``{"id", "hash", "dim"}`` of the backbone in use.
        checkpoint: the checkpoint file, named in the error.
        what: what the file is, for the messages.

    Raises:
        InputError: one line naming the checkpoint, both backbones and the ``--backbone`` to use.

    Warns:
        UnrecordedBackboneWarning: the checkpoint records no backbone (accepted).
    """
    rec = backbone_record(recorded)
    if rec is None:
        warnings.warn(
            f"{checkpoint}: {what} does not record the backbone its training embeddings came from "
            f"(made by an older terraloc); assuming '{actual.get('id')}'",
            UnrecordedBackboneWarning,
            stacklevel=2,
        )
        return
    if same_backbone(rec, actual):
        return
    dim = f"{rec['dim']}-d " if rec.get("dim") else ""
    raise InputError(
        f"{what} expects {dim}embeddings of backbone '{rec['id']}' (weights {rec['hash'] or 'unhashed'}) "
        f"but the backbone in use is '{actual.get('id')}' (weights {actual.get('hash') or 'unhashed'}, "
        f"{actual.get('dim')}-d); use --backbone {rec['id']} or retrain on its embeddings",
        path=checkpoint,
        field="backbone",
    )
