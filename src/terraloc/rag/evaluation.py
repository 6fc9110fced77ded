"""``terraloc rag eval``: the reasoning stage on precomputed candidates, scored per method."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.confidence.features import Features
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
class MethodConfidence:
    """Each photo's confidence under one method.

    Attributes:
        probs: ``(N, 5)`` P(error <= 1/25/200/750/2500 km): nested cross-validated (out-of-fold)
            when fitted here, or a given calibrator's.
        features: the features they come from.
        identity_key: the method's configuration key.
        source: ``"cross-validated (<family>)"`` or ``"calibrator <file>"``.
    """

    probs: NDArray[np.float64]
    features: Features
    identity_key: str
    source: str


@dataclass
class RagEvalRun:
    """Everything ``rag eval`` computed."""

    csets: list[CandidateSet]
    methods: dict[str, MethodRun]
    answers: dict[str, list[list[Answer]]] = field(default_factory=dict)
    default_method: str = DEFAULT_WITHOUT_LLM
    confidence: dict[str, MethodConfidence] = field(default_factory=dict)


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


def method_confidence(
    run: RagEvalRun,
    consensus: GeoConsensusConfig | None = None,
    calibrators: Sequence[Any] = (),
    progress: Callable[[str], None] | None = None,
) -> None:
    """Fill ``run.confidence``: per method, a given calibrator whose identity matches, else nested
    5-fold cross-validated probabilities (:func:`terraloc.confidence.fitting.fit_calibrator`).
    Methods sharing one :class:`MethodRun` (``default``) share the result."""
    from terraloc.confidence.calibrator import identity_key
    from terraloc.confidence.fitting import MIN_PHOTOS, fit_calibrator
    from terraloc.geo import haversine_km
    from terraloc.rag.confidence import rag_features, rag_identity

    cfg = consensus or GeoConsensusConfig()
    truth = np.array([c.truth for c in run.csets], dtype=np.float64)
    done: dict[int, MethodConfidence] = {}
    for name, mr in run.methods.items():
        if id(mr) in done:
            run.confidence[name] = done[id(mr)]
            continue
        label = name.split(":", 2)[1] if ":" in name else None
        answers = None
        if label is not None and label in run.answers:
            answers = [[a.candidate for a in ans if a.candidate is not None] for ans in run.answers[label]]
        feats = rag_features(run.csets, mr.selections, cfg, answers)
        key = identity_key(rag_identity(name, cfg))
        cal = next((c for c in calibrators if c.key == key), None)
        if cal is not None:
            mc = MethodConfidence(cal.predict(feats.select(cal.feature_names)), feats, key, "calibrator")
        else:
            sel = np.array([[s.lat, s.lon] for s in mr.selections], dtype=np.float64)
            ok = np.isfinite(sel).all(axis=1)
            err = np.full(len(sel), np.inf)
            err[ok] = haversine_km(sel[ok], truth[ok])
            probs = np.full((len(sel), 5), np.nan)
            if ok.sum() >= MIN_PHOTOS:
                if progress:
                    progress(f"cross-validating the confidence of {name}")
                fit = fit_calibrator(feats.values[ok], err[ok], feats.names, key)
                probs[ok] = fit.nested_probs
                src = f"nested 5-fold cross-validation (chosen: {fit.report['chosen']})"
            else:
                src = f"none (fewer than {MIN_PHOTOS} photos with a prediction)"
            mc = MethodConfidence(probs, feats, key, src)
        done[id(mr)] = mc
        run.confidence[name] = mc


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
        mc = run.confidence.get(name)
        if mc is not None:
            from terraloc.evaluate.calibration import calibration_report
            from terraloc.geo import haversine_km

            ok = np.isfinite(coords).all(axis=1) & np.isfinite(mc.probs).all(axis=1)
            if ok.any():
                err = haversine_km(coords[ok], truth[ok])
                rep = calibration_report(mc.probs[ok], err, (1, 25, 200, 750, 2500))
                out["methods"][name]["calibration"] = rep | {"source": mc.source}
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
    """Rows ``image,lat,lon`` (blank when no prediction) for ``--out``; with confidence computed,
    also ``confidence_<t>`` (P(error <= t km)), the features as ``f_<name>`` and the method's
    configuration key ``config`` (what ``terraloc calibrate`` reads)."""
    rows = []
    mc = run.confidence.get(method)
    for i, (c, s) in enumerate(zip(run.csets, run.methods[method].selections, strict=True)):
        ok = math.isfinite(s.lat) and math.isfinite(s.lon)
        row: dict[str, Any] = {"image": c.image, "lat": s.lat if ok else "", "lon": s.lon if ok else ""}
        if mc is not None:
            for t, p in zip((1, 25, 200, 750, 2500), mc.probs[i], strict=True):
                row[f"confidence_{t}"] = f"{p:.4f}" if math.isfinite(p) else ""
            for n, v in zip(mc.features.names, mc.features.values[i], strict=True):
                row[f"f_{n}"] = f"{v:.6g}"
            row["config"] = mc.identity_key
        rows.append(row)
    return rows
