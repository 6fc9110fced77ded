"""Binary probability models ``x -> P(y = 1 | x)`` that calibrators are built from.

Three families, each fitted with numpy (no scikit-learn) and stored as plain JSON arrays, so
applying a saved calibrator needs numpy only:

* :class:`IsotonicModel`: pool-adjacent-violators on one feature (non-decreasing), stored as
  breakpoints; values between breakpoints are interpolated linearly.
* :class:`LogisticModel`: L2-regularised logistic regression on standardised features (Newton
  steps), stored as mean, scale and coefficients.
* :class:`BoostedTrees`: a small gradient-boosted ensemble of depth-limited regression trees on
  the logistic loss (second-order, quantile split candidates), stored as node arrays.
* :class:`ConstantModel`: a smoothed base rate, used when a threshold has too few positives or
  negatives to fit anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

EPS = 1e-6


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


class BinaryModel(Protocol):
    """``predict(X (N, F)) -> (N,)`` probabilities; ``to_json()`` gives a plain dict."""

    kind: str

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass
class ConstantModel:
    """``P = (positives + 1) / (n + 2)`` whatever the features."""

    p: float
    kind: str = "constant"

    @classmethod
    def fit(cls, x: NDArray[np.float64], y: NDArray[np.float64]) -> ConstantModel:
        return cls(float((y.sum() + 1.0) / (len(y) + 2.0)))

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.full(x.shape[0], self.p)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "p": self.p}


@dataclass
class IsotonicModel:
    """Non-decreasing step function of one feature column.

    Attributes:
        column: which column of ``X`` it reads.
        x, y: breakpoints (``x`` increasing) and probabilities at them; ``np.interp`` between
            them, constant beyond the ends.
    """

    column: int
    x: list[float]
    y: list[float]
    kind: str = "isotonic"

    @classmethod
    def fit(cls, x: NDArray[np.float64], y: NDArray[np.float64], column: int, min_block: int = 20) -> IsotonicModel:
        v = x[:, column]
        order = np.argsort(v, kind="stable")
        xs, ys = v[order], y[order].astype(np.float64)
        # group equal x values first (PAV on tied x would otherwise depend on the order)
        ux, start = np.unique(xs, return_index=True)
        sums = np.add.reduceat(ys, start)
        cnts = np.diff(np.append(start, len(xs))).astype(np.float64)
        blocks: list[list[float]] = []  # [sum, count, x_lo, x_hi]
        for s, c, xv in zip(sums, cnts, ux, strict=True):
            blocks.append([float(s), float(c), float(xv), float(xv)])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
                b = blocks.pop()
                a = blocks[-1]
                blocks[-1] = [a[0] + b[0], a[1] + b[1], a[2], b[3]]
        # blocks of fewer than min_block photos are merged into their smaller neighbour (merging
        # adjacent blocks of a non-decreasing sequence keeps it non-decreasing)
        while len(blocks) > 1:
            small = [i for i, b in enumerate(blocks) if b[1] < min_block]
            if not small:
                break
            i = small[0]
            j = i + 1 if i == 0 else (i - 1 if i == len(blocks) - 1 or blocks[i - 1][1] <= blocks[i + 1][1] else i + 1)
            lo_i, hi_i = min(i, j), max(i, j)
            lo_b, hi_b = blocks[lo_i], blocks[hi_i]
            blocks[lo_i] = [lo_b[0] + hi_b[0], lo_b[1] + hi_b[1], lo_b[2], hi_b[3]]
            del blocks[hi_i]
        bx: list[float] = []
        by: list[float] = []
        for s, c, lo, hi in blocks:
            p = (s + 0.5) / (c + 1.0)  # light smoothing: never exactly 0 or 1
            bx += [lo, hi] if hi > lo else [lo]
            by += [p, p] if hi > lo else [p]
        return cls(column, bx, by)

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(np.interp(x[:, self.column], self.x, self.y), dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "column": self.column, "x": self.x, "y": self.y}


@dataclass
class LogisticModel:
    """``P = sigmoid(b0 + sum_f w_f (x_f - mean_f) / scale_f)``."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    kind: str = "logistic"

    @classmethod
    def fit(cls, x: NDArray[np.float64], y: NDArray[np.float64], l2: float = 1.0, iters: int = 50) -> LogisticModel:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        z = np.c_[np.ones(len(x)), (x - mean) / scale]
        b = np.zeros(z.shape[1])
        reg = np.full(z.shape[1], l2)
        reg[0] = 0.0
        for _ in range(iters):
            p = _sigmoid(z @ b)
            g = z.T @ (p - y) + reg * b
            h = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(z.shape[1])
            step = np.linalg.solve(h, g)
            b -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(mean.tolist(), scale.tolist(), b[1:].tolist(), float(b[0]))

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale) @ np.asarray(self.coef) + self.intercept
        return _sigmoid(np.asarray(z, dtype=np.float64))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "mean": self.mean,
            "scale": self.scale,
            "coef": self.coef,
            "intercept": self.intercept,
        }


@dataclass
class BoostedTrees:
    """Gradient-boosted regression trees on the logistic loss.

    Trees are stored flat: for node ``i`` of a tree, ``feature[i] = -1`` marks a leaf with
    ``value[i]``; otherwise samples with ``x[feature] <= threshold`` go to ``left[i]``, the
    others to ``right[i]``. The score is ``base + sum of leaf values``; ``P = sigmoid(score)``.
    """

    base: float
    trees: list[dict[str, list[Any]]] = field(default_factory=list)
    kind: str = "gbm"

    @classmethod
    def fit(
        cls,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        *,
        rounds: int = 100,
        learning_rate: float = 0.05,
        depth: int = 2,
        min_leaf: int = 20,
        l2: float = 1.0,
        bins: int = 32,
    ) -> BoostedTrees:
        n, f = x.shape
        prior = (y.sum() + 1.0) / (n + 2.0)
        base = float(np.log(prior / (1 - prior)))
        # candidate split points: quantiles of each feature
        cuts = [np.unique(np.quantile(x[:, j], np.linspace(0, 1, bins + 1)[1:-1])) for j in range(f)]
        codes = np.stack([np.searchsorted(cuts[j], x[:, j], side="left") for j in range(f)], axis=1)
        score = np.full(n, base)
        model = cls(base)
        for _ in range(rounds):
            p = _sigmoid(score)
            g, h = p - y, p * (1 - p)
            tree: dict[str, list[Any]] = {"feature": [], "threshold": [], "left": [], "right": [], "value": []}
            leaf_of = np.zeros(n, dtype=np.int64)
            cls._grow(tree, np.arange(n), codes, cuts, g, h, depth, min_leaf, l2, learning_rate, leaf_of)
            vals = np.asarray(tree["value"], dtype=np.float64)
            score += vals[leaf_of]
            model.trees.append(tree)
        return model

    @staticmethod
    def _grow(
        tree: dict[str, list[Any]],
        idx: NDArray[np.int64],
        codes: NDArray[np.int64],
        cuts: list[NDArray[np.float64]],
        g: NDArray[np.float64],
        h: NDArray[np.float64],
        depth: int,
        min_leaf: int,
        l2: float,
        lr: float,
        leaf_of: NDArray[np.int64],
    ) -> int:
        node = len(tree["feature"])
        for key in tree:
            tree[key].append(-1 if key in ("feature", "left", "right") else 0.0)
        gs, hs = float(g[idx].sum()), float(h[idx].sum())
        best: tuple[float, int, int] | None = None
        if depth > 0 and len(idx) >= 2 * min_leaf:
            parent = gs * gs / (hs + l2)
            nb = max(len(cj) for cj in cuts) + 1
            f = codes.shape[1]
            flat = (codes[idx] + np.arange(f) * nb).ravel()  # one bincount for all features
            gb = np.bincount(flat, weights=np.repeat(g[idx], f), minlength=f * nb).reshape(f, nb)
            hb = np.bincount(flat, weights=np.repeat(h[idx], f), minlength=f * nb).reshape(f, nb)
            cb = np.bincount(flat, minlength=f * nb).reshape(f, nb)
            gl, hl, nl = np.cumsum(gb, 1)[:, :-1], np.cumsum(hb, 1)[:, :-1], np.cumsum(cb, 1)[:, :-1]
            ncut = np.array([len(cj) for cj in cuts])[:, None]
            ok = (nl >= min_leaf) & (len(idx) - nl >= min_leaf) & (np.arange(nb - 1)[None, :] < ncut)
            if ok.any():
                gain = gl**2 / (hl + l2) + (gs - gl) ** 2 / (hs - hl + l2) - parent
                gain = np.where(ok, gain, -np.inf)
                j, b = (int(v) for v in np.unravel_index(int(np.argmax(gain)), gain.shape))
                if gain[j, b] > 1e-9:
                    best = (float(gain[j, b]), j, b)
        if best is None:
            tree["value"][node] = float(-lr * gs / (hs + l2))
            leaf_of[idx] = node
            return node
        _, j, b = best
        go_left = codes[idx, j] <= b
        tree["feature"][node] = j
        tree["threshold"][node] = float(cuts[j][b])
        # codes <= b  <=>  x <= cuts[b] (searchsorted side="left": code = #cuts strictly below x)
        left = BoostedTrees._grow(tree, idx[go_left], codes, cuts, g, h, depth - 1, min_leaf, l2, lr, leaf_of)
        right = BoostedTrees._grow(tree, idx[~go_left], codes, cuts, g, h, depth - 1, min_leaf, l2, lr, leaf_of)
        tree["left"][node] = left
        tree["right"][node] = right
        return node

    def decision(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(N,)`` log-odds."""
        score = np.full(x.shape[0], self.base)
        rows = np.arange(x.shape[0])
        for t in self.trees:
            feat = np.asarray(t["feature"], dtype=np.int64)
            thr = np.asarray(t["threshold"], dtype=np.float64)
            left = np.asarray(t["left"], dtype=np.int64)
            right = np.asarray(t["right"], dtype=np.int64)
            node = np.zeros(x.shape[0], dtype=np.int64)
            while True:
                f = feat[node]
                inner = f >= 0
                if not inner.any():
                    break
                go = x[rows, np.where(inner, f, 0)] <= thr[node]
                node = np.where(inner, np.where(go, left[node], right[node]), node)
            score += np.asarray(t["value"], dtype=np.float64)[node]
        return score

    def predict(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return _sigmoid(self.decision(x))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "base": self.base, "trees": self.trees}


def model_from_json(obj: dict[str, Any]) -> BinaryModel:
    """Rebuild a model written by ``to_json``; an unknown kind is a ``ValueError``."""
    kind = obj.get("kind")
    if kind == "constant":
        return ConstantModel(float(obj["p"]))
    if kind == "isotonic":
        return IsotonicModel(int(obj["column"]), [float(v) for v in obj["x"]], [float(v) for v in obj["y"]])
    if kind == "logistic":
        return LogisticModel(
            [float(v) for v in obj["mean"]],
            [float(v) for v in obj["scale"]],
            [float(v) for v in obj["coef"]],
            float(obj["intercept"]),
        )
    if kind == "gbm":
        return BoostedTrees(float(obj["base"]), list(obj["trees"]))
    raise ValueError(f"unknown model kind {kind!r}")
