"""Candidates, the G3 candidates file, prompts, selection, local model files and `rag eval` without an LLM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from terraloc.errors import InputError, MissingResourceError
from terraloc.rag.candidates import (
    Candidate,
    CandidateSet,
    CandidateSource,
    EmbeddingCandidateSource,
    from_coords,
)
from terraloc.rag.candidates_file import read_candidates_file
from terraloc.rag.prompts import answer_schema, build_prompt, diversified_prompts, templates
from terraloc.rag.select import GeoConsensusConfig, select, select_consensus, select_first, select_llm, select_verify

HEADER = "IMG_ID,LAT,LON,candidate_0_gps,candidate_1_gps,candidate_2_gps,reverse_0_gps,reverse_1_gps\n"


def _write(tmp_path: Path, rows: list[str]) -> Path:
    p = tmp_path / "cands.csv"
    p.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return p


def test_candidate_validation_and_json() -> None:
    c = Candidate(10.0, 20.0, source="x", rank=1)
    assert c.to_json() == {"lat": 10.0, "lon": 20.0, "score": None, "source": "x", "rank": 1}
    for bad in [(91.0, 0.0), (0.0, 181.0), (math.nan, 0.0)]:
        with pytest.raises(ValueError):
            Candidate(*bad)
    with pytest.raises(ValueError):
        Candidate(0.0, 0.0, rank=-1)


def test_candidates_file_malformed_rows_reported_by_line_rest_processed(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        [
            'a.jpg,48.85,2.35,"[48.86, 2.34]","[48.80, 2.30]","[40.0, -3.7]","[-33.9, 151.2]","[35.7, 139.7]"',
            'b.jpg,10,20,"[oops]","[1, 2]","[1, 2]","[1, 2]","[1, 2]"',
            'c.jpg,10,20,"[95.0, 2]","[1, 2]","[1, 2]","[1, 2]","[1, 2]"',
            'd.jpg,10,20,"[1, 2]"',
            ',10,20,"[1, 2]","[1, 2]","[1, 2]","[1, 2]","[1, 2]"',
            "",
            'e.jpg,,,"[1.5, 2.5]",,,,',
        ],
    )
    f = read_candidates_file(p)
    assert [s.image for s in f.sets] == ["a.jpg", "e.jpg"]
    a = f.sets[0]
    assert a.truth == (48.85, 2.35) and a.line == 2
    assert [c.latlon for c in a.nearest] == [(48.86, 2.34), (48.80, 2.30), (40.0, -3.7)]
    assert [c.rank for c in a.nearest] == [0, 1, 2] and a.nearest[0].source == "refdb-nearest"
    assert [c.source for c in a.farthest] == ["refdb-farthest"] * 2
    e = f.sets[1]
    assert e.truth is None and len(e.nearest) == 1 and e.farthest == []
    assert len(f.problems) == 4
    assert f"{p}, line 3, field 'candidate_0_gps': not a JSON [lat, lon] pair" in f.problems[0]
    assert "line 4" in f.problems[1] and "out of range" in f.problems[1]
    assert "line 5" in f.problems[2] and "expected 8 cells, found 4" in f.problems[2]
    assert "line 6" in f.problems[3] and "empty image id" in f.problems[3]


def test_candidates_file_structural_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError):
        read_candidates_file(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_candidates_file(tmp_path / "empty.csv")
    (tmp_path / "noid.csv").write_text('x,candidate_0_gps\n1,"[1, 2]"\n')
    with pytest.raises(InputError, match="no image id column"):
        read_candidates_file(tmp_path / "noid.csv")
    (tmp_path / "nocand.csv").write_text("IMG_ID,LAT,LON\na,1,2\n")
    with pytest.raises(InputError, match="no candidate_<i>_gps columns"):
        read_candidates_file(tmp_path / "nocand.csv")


def test_shared_candidates_file(shared: Path) -> None:
    f = read_candidates_file(shared / "data" / "rag" / "g3_candidates_im2gps3k_dev.csv", limit=5)
    assert len(f) == 5 and not f.problems
    assert all(len(s.nearest) == 20 and len(s.farthest) == 20 and s.truth is not None for s in f.sets)


def test_embedding_source_nearest_and_farthest() -> None:
    coords = np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0]])
    emb = np.eye(3, dtype=np.float32)
    q = np.array([[0.9, 0.1, 0.0]], dtype=np.float32)
    q /= np.linalg.norm(q)
    near = EmbeddingCandidateSource(coords, emb, "gps-gallery")
    far = EmbeddingCandidateSource(coords, emb, "refdb-farthest", farthest=True)
    assert isinstance(near, CandidateSource)
    n = near.candidates(q, 2)[0]
    f = far.candidates(q, 1)[0]
    assert [c.latlon for c in n] == [(0.0, 0.0), (10.0, 10.0)] and n[0].score > n[1].score
    assert f[0].latlon == (20.0, 20.0) and f[0].source == "refdb-farthest"


def _cset(points: list[tuple[float, float]]) -> CandidateSet:
    return CandidateSet("x.jpg", from_coords(points, "refdb-nearest"))


def test_consensus_prefers_the_cluster_over_the_first_candidate() -> None:
    # One outlier first, then four candidates around Paris.
    cs = _cset([(40.7, -74.0), (48.85, 2.35), (48.86, 2.34), (48.84, 2.36), (48.9, 2.3)])
    assert select_first(cs).lat == 40.7
    sel = select_consensus(cs)
    assert sel.method == "consensus" and abs(sel.lat - 48.85) < 0.1
    # LLM answers carry weight: three answers in New York flip it.
    llm = from_coords([(40.71, -74.0), (40.7, -74.01), (40.72, -73.99)], "llm:test")
    sel2 = select_consensus(cs, llm, GeoConsensusConfig(llm_weight=2.0))
    assert abs(sel2.lat - 40.7) < 0.1


def test_consensus_across_the_antimeridian() -> None:
    cs = _cset([(0.0, 0.0), (-17.0, 179.9), (-17.0, -179.9), (-17.1, 179.95)])
    assert abs(abs(select_consensus(cs).lon) - 179.9) < 0.1


def test_select_llm_and_its_fallback() -> None:
    cs = _cset([(48.85, 2.35), (48.86, 2.34)])
    llm = from_coords([(51.5, -0.1)], "llm:x")
    assert select_llm(cs, llm).lat == 51.5
    fb = select_llm(cs, [])
    assert fb.method == "consensus" and fb.details["fallback"] == "no valid LLM answer"
    with pytest.raises(ValueError, match="unknown selection method"):
        select("nope", cs)


def test_verify_with_the_geoclip_location_encoder() -> None:
    import torch

    from terraloc.encoders import load_location_encoder

    enc = load_location_encoder("geoclip")
    cands = from_coords([(48.85, 2.35), (-33.87, 151.21), (40.71, -74.0)], "x")
    with torch.no_grad():
        target = enc.encode(torch.tensor([[-33.8, 151.1]], dtype=torch.float32), normalize=True)[0].numpy()
    sel = select_verify(target, cands, enc)
    assert sel.method == "verify" and sel.lat == -33.87
    with pytest.raises(ValueError, match="location encoder's space"):
        select_verify(np.ones(768, dtype=np.float32), cands, enc)


def test_prompts_from_data_files() -> None:
    cs = CandidateSet(
        "x.jpg",
        from_coords([(48.8566, 2.3522), (45.76, 4.84)], "refdb-nearest"),
        from_coords([(-33.87, 151.21)], "refdb-farthest"),
    )
    p = build_prompt(cs, 2, 1)
    assert p.n_near == 2 and p.n_far == 1 and not p.with_image
    assert "(48.8566, 2.3522) Paris, Ile-de-France, FR" in p.user
    assert "Sydney" in p.user and "NOT" in p.user
    assert p.system == templates()["system"]
    msgs = p.messages({"type": "image_url", "image_url": {"url": "data:x"}})
    assert msgs[1]["content"] == p.user  # text-only prompt: the image is not attached
    img = build_prompt(cs, 2, with_image=True, with_places=False)
    assert "Paris" not in img.user
    assert isinstance(img.messages({"type": "image_url"})[1]["content"], list)
    zero = build_prompt(cs, 0, with_image=True)
    assert zero.n_near == 0 and "(48.8566" not in zero.user
    # G3 diversification: 0 is skipped without the image; samples multiply.
    tags = [q.tag for q in diversified_prompts(cs, (0, 1, 2), samples=2)]
    assert tags == ["k1-s0", "k1-s1", "k2-s0", "k2-s1"]
    assert len(diversified_prompts(cs, (0, 1), with_image=True)) == 2
    assert answer_schema()["required"] == ["lat", "lon", "reason"]


def test_model_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from terraloc.rag import models

    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOTGGUF")
    with pytest.raises(InputError, match="not a GGUF file"):
        models.resolve_model(str(bad))
    with pytest.raises(MissingResourceError, match="not found"):
        models.resolve_model(str(tmp_path / "none.gguf"))
    with pytest.raises(InputError, match="unknown local model"):
        models.resolve_model("gpt-17")
    good = tmp_path / "ok.gguf"
    good.write_bytes(b"GGUF" + b"\0" * 16)
    assert models.resolve_model(str(good)) == good
    monkeypatch.setenv("TERRALOC_LLM_MODEL", str(good))
    assert models.resolve_model() == good
    if models.chunks_installed("gemma3-270m"):
        path = models.assemble("gemma3-270m")  # concatenates, checks magic and SHA-256, atomic
        assert path.parent == tmp_path / "models" and path.read_bytes()[:4] == b"GGUF"
        assert not list(path.parent.glob(".*.tmp"))


def test_rag_eval_without_llm_on_the_shared_file(shared: Path, cli) -> None:  # type: ignore[no-untyped-def]
    cand = shared / "data" / "rag" / "g3_candidates_im2gps3k_dev.csv"
    r = cli("rag", "eval", "--candidates", cand, "--limit", "300", "--bootstrap", "20", "--json")
    assert r.code == 0, r.err
    obj = json.loads(r.out)
    assert set(obj) == {"methods", "seconds_per_image"}
    assert set(obj["methods"]) == {"first", "consensus", "default"}
    first, default = obj["methods"]["first"], obj["methods"]["default"]
    assert default == obj["methods"]["consensus"] and default["n"] == 300
    assert set(first) >= {"accuracy", "median_km", "geoscore", "ci95", "n", "coverage"}
    # On this file consensus beats the first candidate at the coarse thresholds.
    for t in ("200", "750", "2500"):
        assert default["accuracy"][t] > first["accuracy"][t]
    table = cli("rag", "eval", "--candidates", cand, "--limit", "50", "--bootstrap", "5")
    assert table.code == 0 and "consensus" in table.out and "default = consensus" in table.out


def test_rag_eval_bad_input(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    p = _write(tmp_path, ['a.jpg,1,2,"[1, 2]","[1, 2]","[oops","[1, 2]","[1, 2]"'])
    r = cli("rag", "eval", "--candidates", p)
    assert r.code == 2 and "line 2" in r.err and "no usable rows" in r.err and "Traceback" not in r.err
    p2 = _write(tmp_path, ['a.jpg,,,"[1, 2]","[1, 2]","[1, 2]","[1, 2]","[1, 2]"'])
    r2 = cli("rag", "eval", "--candidates", p2)
    assert r2.code == 2 and "no ground truth" in r2.err
    p3 = _write(tmp_path, ['a.jpg,1,2,"[1, 2]","[1, 2]","[1, 2]","[1, 2]","[1, 2]"'])
    r3 = cli("rag", "eval", "--candidates", p3, "--llm", "ftp://x")
    assert r3.code == 2 and "cannot read LLM spec" in r3.err
    r4 = cli("rag", "eval", "--candidates", p2, "--neighbours", "a,b")
    assert r4.code == 2 and "--neighbours" in r4.err
