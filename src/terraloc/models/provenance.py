"""Which image backbone a trained head's embeddings came from.

A backbone is described by :meth:`terraloc.encoders.image.ImageBackbone.describe`:
``{"id": model id, "hash": SHA-256 prefix of its weight files, "dim": embedding width}``.
``terraloc embed`` writes it into the shard manifest (``"backbone"``), the trainer and
``terraloc fusion train`` copy it into every checkpoint (``"backbone"``, a JSON string), and the
heads expose it as ``required_backbone``, which :func:`terraloc.models.head.check_backbone` (the one
backbone check, run by ``build_head``) compares with the backbone in use: other weights are refused
in one line naming the checkpoint.

Checkpoints made before the record existed carry none (``required_backbone`` is ``None``): they
are accepted, and only the feature width is checked (``check_dim``), as for GeoCLIP's published head.
"""

from __future__ import annotations

import json
from typing import Any


def backbone_record(desc: Any) -> dict[str, Any] | None:
    """A stored backbone description (dict or JSON string) as ``{"id", "hash", "dim"}``, or ``None`` if absent."""
    if isinstance(desc, str):
        try:
            desc = json.loads(desc)
        except ValueError:
            return None
    if not isinstance(desc, dict) or not desc.get("id"):
        return None
    dim = desc.get("dim")
    return {"id": str(desc["id"]), "hash": str(desc.get("hash") or ""), "dim": int(dim) if dim else None}
