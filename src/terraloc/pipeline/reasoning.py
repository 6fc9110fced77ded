"""Reasoning stages that run after the head (``GeolocatorConfig.reasoner``).

``rag``: the RAG reasoner of :mod:`terraloc.rag` ranks candidate locations by geo-consensus:
the head's own candidates (any features head: GeoCLIP's gallery top-k is what G3 retrieves too),
the reference database's nearest and farthest photos when a database is given, and an LLM's
answers with ``llm``. The database is the ``refdb`` head's own, or ``GeolocatorConfig.db`` next to
any features head (it must have been built with the same backbone).
"""

from __future__ import annotations

from typing import Any

import torch

from terraloc.errors import InputError
from terraloc.models.head import Candidates, check_backbone


class RagStage:
    """The ``rag`` reasoning stage: ``(names, embeddings, head candidates) → Candidates``."""

    def __init__(self, config: Any, backbone: Any, head: Any) -> None:
        from terraloc.rag.pipeline_reasoner import RagReasoner

        if head.input != "features":
            raise InputError(f"the rag reasoner needs a head on backbone features, not {config.head}", field="reasoner")
        db = getattr(head, "db", None)
        if db is None and config.db:
            from terraloc.search.refdb import ReferenceDatabase

            db = ReferenceDatabase.load(config.db)
            check_backbone(db.manifest.get("backbone"), backbone, what="the reference database", source=config.db)
        # The refdb head's candidates are a consensus of the same neighbours: hand them over once.
        self.use_head = getattr(head, "db", None) is None
        self.db = db
        self.k_neighbors = config.k_neighbors
        self.farthest = config.farthest
        self.reasoner = RagReasoner(config.llm, n_far=config.farthest)

    def describe(self) -> dict[str, Any]:
        return self.reasoner.describe()  # type: ignore[no-any-return]

    def __call__(self, names: list[str], features: torch.Tensor | None, cands: Candidates, top_k: int) -> Candidates:
        if features is None:
            raise InputError("the rag reasoner needs backbone features", field="reasoner")
        emb = torch.nn.functional.normalize(features.float(), dim=-1).numpy()
        if self.db is not None:
            sims, idx = self.db.search(emb, self.k_neighbors)
            fsims, fidx = self.db.farthest(emb, self.farthest)
        rows = []
        for i in range(emb.shape[0]):
            near = (self.db.coords[idx[i]], sims[i]) if self.db is not None else None
            far = (self.db.coords[fidx[i]], fsims[i]) if self.db is not None else None
            n = cands.count(i)
            own = (cands.coords[i, :n], cands.probs[i, :n]) if self.use_head and n else None
            ranked = self.reasoner.rank(names[i], near, far, top_k, head=own)
            rows.append([(lat, lon, p, {"stage": "rag"}) for lat, lon, p in ranked])
        return Candidates.from_rows(rows, max(1, max((len(r) for r in rows), default=1)))


__all__ = ["RagStage"]
