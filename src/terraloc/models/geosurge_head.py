"""The GeoSURGE head for the pipeline: a trained checkpoint over backbone embeddings.

``features (N, D)`` → L2-normalise (the embeddings ``terraloc embed`` writes to shards) →
:meth:`terraloc.models.geosurge.GeoSurgeHead.predict_leaves` → :class:`~terraloc.models.head.Candidates`
whose evidence names the winning cell at every level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from terraloc.errors import InputError
from terraloc.models.head import BaseHead, Candidates, register_head


def recorded_backbone(payload: dict[str, Any]) -> dict[str, Any] | None:
    """``{"id", "hash", "dim"}`` a checkpoint records for the backbone of its training embeddings, if any.

    See :mod:`terraloc.models.provenance` (where the record is written and what it means).
    """
    from terraloc.models.provenance import backbone_record

    return backbone_record(payload.get("backbone"))


@register_head("geosurge")
class GeoSurgeCellHead(BaseHead):
    """A trained GeoSURGE geocell hierarchy (``terraloc train geosurge``) as a pipeline head.

    Evidence per candidate: ``{"cells": [index per level, coarse to fine], "s2_tokens": [...]}``.
    """

    input = "features"

    def __init__(self, checkpoint: str | Path) -> None:
        from terraloc.models.geosurge import GeoSurgeHead

        self.checkpoint = Path(checkpoint)
        self.head = GeoSurgeHead.from_checkpoint(checkpoint)
        partition = self.head.partition
        self.input_dim = self.head.input_dim
        self.required_backbone = self.head.required_backbone
        if self.head.fusion:
            raise InputError(
                f"scores fused features, not backbone embeddings: use it with --fusion {self.head.fusion}",
                path=checkpoint,
            )
        self._tokens = [partition.tokens(lv) for lv in range(partition.n_levels)]

    @classmethod
    def from_config(cls, config: Any, backbone: Any) -> GeoSurgeCellHead:
        if not config.checkpoint:
            raise InputError("the geosurge head needs a trained checkpoint (--checkpoint FILE)", field="checkpoint")
        return cls(config.checkpoint)

    def describe(self) -> dict[str, Any]:
        return {"geosurge": {"checkpoint": str(self.checkpoint), "cells": self.head.partition.sizes}}

    def files(self) -> dict[str, str]:
        return {"checkpoint": str(self.checkpoint)}

    def evidence(self, leaf: int) -> dict[str, Any]:
        """The winning cell at every level for a leaf cell."""
        cells = [int(c) for c in self.head.partition.ancestry[leaf]]
        return {"cells": cells, "s2_tokens": [self._tokens[lv][c] for lv, c in enumerate(cells)]}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, top_k: int) -> Candidates:
        emb = torch.nn.functional.normalize(x.float(), dim=-1)
        latlon, probs, leaves = self.head.predict_leaves(emb, top_k)
        evidence = [[self.evidence(int(c)) for c in row] for row in leaves]
        return Candidates(latlon, probs, evidence)
