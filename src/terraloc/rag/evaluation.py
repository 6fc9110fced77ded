"""``terraloc rag eval``: the reasoning stage on precomputed candidates, scored per method."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terraloc.rag.candidates import CandidateSet
from terraloc.rag.reasoner import Answer, Backend, ReasonerConfig, run_reasoner
from terraloc.rag.select import GeoConsensusConfig, Selection, select_consensus, select_first, select_llm

# Chosen by measurement on the G3 candidates file (docs/rag.md): with the local Qwen 1.5B model
# (first 53 photos) adding its answers to consensus lowered accuracy, so the default stays
# consensus; `consensus+llm:<label>` is reported beside it.
DEFAULT_WITHOUT_LLM = "consensus"
DEFAULT_WITH_LLM = "consensus"


@dataclass
class MethodRun:
    """Selections of one method over all photos and the seconds it took per photo."""

    selections: list[Selection]
    seconds_per_image: float


@dataclass
class RagEvalRun:
    """Everything ``rag eval`` computed."""

    csets: list[CandidateSet]
    methods: dict[str, MethodRun]
    answers: dict[str, list[list[Answer]]] = field(default_factory=dict)
    default_method: str = DEFAULT_WITHOUT_LLM


def _timed(fn: Callable[[CandidateSet], Selection], csets: Sequence[CandidateSet]) -> MethodRun:
    t = time.perf_counter()
    sels = [fn(c) for c in csets]
    return MethodRun(sels, (time.perf_counter() - t) / max(len(csets), 1))


def run_rag_eval(
    csets: Sequence[CandidateSet],
    backends: Sequence[Backend] = (),
    reasoner: ReasonerConfig | None = None,
    consensus: GeoConsensusConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> RagEvalRun:
    """Run first, consensus and, per backend, the LLM configurations; pick the default."""
    cfg = consensus or GeoConsensusConfig()
    csets = list(csets)
    methods: dict[str, MethodRun] = {
        "first": _timed(select_first, csets),
        "consensus": _timed(lambda c: select_consensus(c, (), cfg), csets),
    }
    run = RagEvalRun(csets, methods)
    combined: list[str] = []
    for backend in backends:
        rcfg = ReasonerConfig(label=backend.label) if reasoner is None else _relabel(reasoner, backend.label)
        answers = run_reasoner(csets, backend, rcfg, progress=progress)
        run.answers[backend.label] = answers
        # The cost of the LLM on this machine: generation seconds (kept in the cache for reruns).
        llm_cost = sum(a.result.seconds for ans in answers for a in ans) / max(len(csets), 1)
        for k in rcfg.neighbour_counts:
            tagged = [[a for a in ans if a.prompt.n_near == k or (k == 0 and a.prompt.n_near == 0)] for ans in answers]
            if not any(tagged):
                continue
            cost = sum(a.result.seconds for ans in tagged for a in ans) / max(len(csets), 1)
            methods[f"llm:{backend.label}:k{k}"] = MethodRun(
                [
                    select_llm(c, [a.candidate for a in ans if a.candidate is not None], cfg)
                    for c, ans in zip(csets, tagged, strict=True)
                ],
                cost,
            )
        llm_cands = [[a.candidate for a in ans if a.candidate is not None] for ans in answers]
        methods[f"llm:{backend.label}"] = MethodRun(
            [select_llm(c, lc, cfg) for c, lc in zip(csets, llm_cands, strict=True)], llm_cost
        )
        name = f"consensus+llm:{backend.label}"
        t = time.perf_counter()
        sels = [select_consensus(c, lc, cfg) for c, lc in zip(csets, llm_cands, strict=True)]
        cons = MethodRun(sels, llm_cost + (time.perf_counter() - t) / max(len(csets), 1))
        methods[name] = cons
        combined.append(name)
    if combined:
        name = DEFAULT_WITH_LLM if DEFAULT_WITH_LLM in methods else combined[0]
        run.default_method = name
        methods["default"] = methods[name]
    else:
        run.default_method = DEFAULT_WITHOUT_LLM
        methods["default"] = methods[DEFAULT_WITHOUT_LLM]
    return run


def _relabel(cfg: ReasonerConfig, label: str) -> ReasonerConfig:
    from dataclasses import replace

    return replace(cfg, label=label)


def evaluate_run(run: RagEvalRun, source: Path, n_boot: int = 1000) -> dict[str, Any]:
    """Score every method with ``terraloc eval``'s metrics: ``{"methods": ..., "seconds_per_image": ...}``."""
    from terraloc.evaluate import GroundTruth, Predictions, evaluate

    ids = [c.image for c in run.csets]
    truth = np.array([c.truth for c in run.csets], dtype=np.float64)
    gt = GroundTruth(name=source.stem, ids=ids, coords=truth, path=source)
    out: dict[str, Any] = {"methods": {}, "seconds_per_image": {}}
    for name, mr in run.methods.items():
        coords = np.array([[s.lat, s.lon] for s in mr.selections], dtype=np.float64)
        preds = Predictions(ids, coords, source, "terraloc")
        out["methods"][name] = evaluate(gt, preds, n_boot=n_boot).to_json()
        out["seconds_per_image"][name] = round(mr.seconds_per_image, 6)
    return out


def llm_failure_counts(run: RagEvalRun) -> dict[str, dict[str, int]]:
    """Per backend: answers, request failures, parse failures, cached replies."""
    out = {}
    for label, answers in run.answers.items():
        flat = [a for ans in answers for a in ans]
        out[label] = {
            "answers": len(flat),
            "request_errors": sum(1 for a in flat if a.result.error is not None),
            "parse_failures": sum(1 for a in flat if a.result.error is None and not a.parsed.ok),
            "cached": sum(1 for a in flat if a.result.cached),
        }
    return out


def selection_rows(run: RagEvalRun, method: str) -> list[dict[str, Any]]:
    """Rows ``image,lat,lon`` (blank when no prediction) for ``--out``."""
    rows = []
    for c, s in zip(run.csets, run.methods[method].selections, strict=True):
        ok = math.isfinite(s.lat) and math.isfinite(s.lon)
        rows.append({"image": c.image, "lat": s.lat if ok else "", "lon": s.lon if ok else ""})
    return rows
