"""The reference-database head: kNN over geotagged reference photos, then geo-consensus.

``features (N, D)`` → L2-normalise → the database's ``k_neighbors`` most similar references →
:func:`terraloc.search.refdb.knn_consensus` (similarity-weighted clusters within ``radius_km``) →
:class:`~terraloc.models.head.Candidates`. The database records the backbone it was built with;
:func:`~terraloc.models.head.build_head` refuses another.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from terraloc.errors import InputError
from terraloc.models.head import BaseHead, Candidates, register_head


@register_head("refdb")
class ReferenceDatabaseHead(BaseHead):
    """kNN consensus over a :class:`~terraloc.search.refdb.ReferenceDatabase`.

    Evidence per candidate: ``{"references": [{"id", "path", "similarity", "lat", "lon"}, ...]}`` —
    the retrieved neighbours within ``radius_km`` of the candidate, most similar first.

    Args:
        db: the loaded database.
        k_neighbors: neighbours retrieved per photo.
        temperature: softmax temperature on cosine similarity (neighbour weights).
        radius_km: neighbours within this distance of a cluster seed vote for the same place.
    """

    input = "features"

    def __init__(self, db: Any, k_neighbors: int = 16, temperature: float = 0.05, radius_km: float = 100.0) -> None:
        from terraloc.search.refdb import ConsensusConfig

        self.db = db
        self.consensus = ConsensusConfig(k_neighbors, temperature, radius_km)
        self.required_backbone = dict(db.manifest.get("backbone") or {}) or None
        self.input_dim = int(self.required_backbone["dim"]) if self.required_backbone else None

    @classmethod
    def from_config(cls, config: Any, backbone: Any) -> ReferenceDatabaseHead:
        from terraloc.search.refdb import ReferenceDatabase

        if not config.db:
            raise InputError("the refdb head needs a reference database (--db DIR)", field="db")
        return cls(ReferenceDatabase.load(config.db), config.k_neighbors, config.temperature, config.radius_km)

    def describe(self) -> dict[str, Any]:
        return {"refdb": {"path": str(self.db.path), "n": len(self.db), "k": self.consensus.k}}

    def files(self) -> dict[str, str]:
        return self.db.files()

    def neighbours(self, embeddings: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``(N, D)`` normalised embeddings → cosine similarities and rows of the ``k`` nearest references."""
        return self.db.search(embeddings, k)  # type: ignore[no-any-return]

    def reference(self, row: int, similarity: float) -> dict[str, Any]:
        """One reference photo as evidence."""
        t = self.db.table
        lat, lon = self.db.coords[row]
        return {
            "id": str(t["id"].iat[row]),
            "path": str(t["path"].iat[row]),
            "similarity": round(float(similarity), 6),
            "lat": float(lat),
            "lon": float(lon),
        }

    @torch.no_grad()
    def predict(self, x: torch.Tensor, top_k: int) -> Candidates:
        from terraloc.geo import haversine_km
        from terraloc.search.refdb import knn_consensus

        emb = torch.nn.functional.normalize(x.float(), dim=-1).numpy()
        sims, idx = self.neighbours(emb, self.consensus.k)
        per_image = []
        for i in range(emb.shape[0]):
            ok = idx[i] >= 0
            rows, s = idx[i][ok], sims[i][ok]
            nb = self.db.coords[rows]
            locs, probs = knn_consensus(nb, s, self.consensus, top_k)
            out = []
            for loc, p in zip(locs, probs, strict=True):
                d = haversine_km(np.repeat(loc[None], len(nb), 0), nb)
                near = [j for j in np.argsort(-s, kind="stable") if d[j] <= self.consensus.radius_km]
                refs = [self.reference(int(rows[j]), float(s[j])) for j in near]
                out.append((float(loc[0]), float(loc[1]), float(p), {"references": refs}))
            per_image.append(out)
        return Candidates.from_rows(per_image, top_k)
