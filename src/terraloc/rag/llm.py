"""LLM backends: any OpenAI-compatible chat-completions server, and a local GGUF model.

* :class:`OpenAIChatClient` talks to OpenAI, vLLM, Ollama, LM Studio or llama.cpp's server
  (``python -m llama_cpp.server``) over HTTP: async (``httpx``) with a concurrency limit,
  per-request timeouts, retries with exponential backoff on timeouts, connection errors, 429 and
  5xx, the photo as a base64 ``image_url`` part for multimodal models, and JSON-schema
  constrained output where the server supports it (``structured="auto"`` tries OpenAI's
  ``json_schema``, then llama.cpp's ``json_object`` + ``schema``, then plain text, and remembers
  what worked).
* :class:`LocalLlamaBackend` runs a GGUF model in-process through ``llama-cpp-python``
  (text-only), with the answer schema enforced by a grammar.

Both share :class:`ResponseCache`: one JSON file per request, keyed by the SHA-256 of the full
request (endpoint or model file, and the whole body including messages, sampling parameters and
seed), so re-runs are free and an interrupted run resumes where it stopped. A request that fails
never raises: it returns a :class:`ChatResult` whose ``error`` says why, so a batch goes on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terraloc.io import atomic_write_text

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
STRUCTURED_MODES = ("auto", "json_schema", "llama", "json_object", "none")


@dataclass
class ChatRequest:
    """One chat-completion request.

    Attributes:
        messages: OpenAI-format messages.
        temperature: sampling temperature (0 = greedy).
        max_tokens: generation limit in tokens.
        seed: sampling seed (part of the cache key; distinct seeds give distinct samples).
        schema: JSON schema the answer must follow, or ``None``.
    """

    messages: list[dict[str, Any]]
    temperature: float = 0.0
    max_tokens: int = 160
    seed: int = 0
    schema: dict[str, Any] | None = None


@dataclass
class ChatResult:
    """The outcome of one request.

    Attributes:
        text: the reply's content (``""`` on failure).
        error: ``None`` on success, else a one-line reason (timeout, HTTP status, bad body, ...).
        cached: served from the on-disk cache.
        seconds: wall time the request took (for a cache hit: the time it took when it was made).
        attempts: HTTP attempts made.
        usage: the server's token usage, when reported.
    """

    text: str
    error: str | None = None
    cached: bool = False
    seconds: float = 0.0
    attempts: int = 0
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class ResponseCache:
    """On-disk cache of successful replies, one JSON file per request key.

    Args:
        directory: where the files go (created on demand).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @staticmethod
    def key(endpoint: str, body: dict[str, Any]) -> str:
        """SHA-256 of the endpoint and the canonical JSON of the full request body."""
        blob = json.dumps({"endpoint": endpoint, "body": body}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data

    def put(self, key: str, value: dict[str, Any]) -> None:
        atomic_write_text(self._path(key), json.dumps(value, ensure_ascii=False))


def image_part(image: str | Path | bytes, mime: str | None = None) -> dict[str, Any]:
    """An OpenAI ``image_url`` content part holding the photo as a base64 data URL.

    Args:
        image: a file path or the encoded bytes (JPEG/PNG/WebP/GIF).
        mime: MIME type; guessed from the bytes when omitted.
    """
    data = Path(image).read_bytes() if isinstance(image, str | Path) else bytes(image)
    if mime is None:
        if data[:3] == b"\xff\xd8\xff":
            mime = "image/jpeg"
        elif data[:8] == b"\x89PNG\r\n\x1a\n":
            mime = "image/png"
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            mime = "image/webp"
        elif data[:4] == b"GIF8":
            mime = "image/gif"
        else:
            mime = "application/octet-stream"
    b64 = base64.b64encode(data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64}"}}


def _response_format(mode: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "location", "schema": schema, "strict": True}}
    if mode == "llama":
        return {"type": "json_object", "schema": schema}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


class OpenAIChatClient:
    """Async client of an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080/v1`` or ``https://api.openai.com/v1``.
        model: the model name the server expects.
        api_key: bearer token (default: ``OPENAI_API_KEY`` if set; local servers need none).
        timeout_s: per-attempt timeout in seconds.
        max_retries: further attempts after a retryable failure.
        backoff_s: first backoff; doubles each retry, with up to 25% jitter.
        concurrency: requests in flight at once.
        structured: how to ask for schema-constrained JSON (see :data:`STRUCTURED_MODES`).
        cache: an on-disk cache, or ``None``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        concurrency: int = 4,
        structured: str = "auto",
        cache: ResponseCache | None = None,
    ) -> None:
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be one of {STRUCTURED_MODES}, got '{structured}'")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = max(1, concurrency)
        self.structured = structured
        self.cache = cache
        self._modes: list[str] = ["json_schema", "llama", "none"] if structured == "auto" else [structured]
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def structured_mode(self) -> str:
        """The structured-output mode currently in use (after any fallback)."""
        return self._modes[0]

    def body(self, req: ChatRequest, mode: str | None = None) -> dict[str, Any]:
        """The JSON body sent for ``req`` (``mode`` = structured-output mode)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": req.messages,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "seed": req.seed,
        }
        if req.schema is not None:
            fmt = _response_format(mode or self.structured_mode, req.schema)
            if fmt is not None:
                body["response_format"] = fmt
        return body

    async def achat(self, client: Any, req: ChatRequest) -> ChatResult:
        """Send one request (with retries); never raises for server or network failures."""
        import httpx

        cache_body = self.body(req, "schema" if req.schema is not None else "none")
        cache_body["response_schema"] = req.schema
        key = ResponseCache.key(self.endpoint, cache_body)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return ChatResult(hit["text"], None, True, float(hit.get("seconds", 0.0)), 0, hit.get("usage", {}))
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        start = time.perf_counter()
        attempts = 0
        last_error = "no attempt made"
        retries_left = self.max_retries
        while True:
            mode = self.structured_mode
            attempts += 1
            try:
                resp = await client.post(
                    self.endpoint, json=self.body(req, mode), headers=headers, timeout=self.timeout_s
                )
            except httpx.TimeoutException:
                last_error = f"timed out after {self.timeout_s:g} s"
                retryable = True
            except httpx.HTTPError as exc:
                last_error = f"connection failed: {type(exc).__name__}: {exc}".strip()
                retryable = True
            else:
                if resp.status_code == 200:
                    text, err, usage = _read_completion(resp)
                    if err is None:
                        if self.cache is not None:
                            self.cache.put(key, _entry(text, usage, time.perf_counter() - start, cache_body))
                        return ChatResult(text, None, False, time.perf_counter() - start, attempts, usage)
                    last_error, retryable = err, True
                elif _format_rejected(resp) and req.schema is not None and mode != "none":
                    # The server does not understand this response_format: fall back, remember, retry now.
                    with self._lock:
                        if len(self._modes) > 1 and self._modes[0] == mode:
                            self._modes.pop(0)
                    if self.structured_mode == mode:
                        return ChatResult(
                            "",
                            f"HTTP {resp.status_code}: {_snippet(resp.text)}",
                            False,
                            time.perf_counter() - start,
                            attempts,
                        )
                    continue
                else:
                    last_error = f"HTTP {resp.status_code}: {_snippet(resp.text)}"
                    retryable = resp.status_code in RETRY_STATUS
            if not retryable or retries_left <= 0:
                return ChatResult("", last_error, False, time.perf_counter() - start, attempts)
            retries_left -= 1
            delay = self.backoff_s * (2 ** (attempts - 1)) * (1 + 0.25 * random.random())
            await asyncio.sleep(delay)

    async def achat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Send all requests, at most ``concurrency`` at a time; results in request order."""
        import httpx

        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout_s) as client:

            async def one(r: ChatRequest) -> ChatResult:
                async with sem:
                    return await self.achat(client, r)

            return list(await asyncio.gather(*(one(r) for r in requests)))

    def chat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Synchronous wrapper of :meth:`achat_many`."""
        return asyncio.run(self.achat_many(requests))

    def chat(self, req: ChatRequest) -> ChatResult:
        return self.chat_many([req])[0]


def _format_rejected(resp: Any) -> bool:
    """Whether an error response says the server does not accept our ``response_format``.

    OpenAI-style servers answer 400/422; llama-cpp-python's server answers 500 with a validation
    error naming ``response_format``.
    """
    if resp.status_code in (400, 422):
        return True
    return resp.status_code >= 400 and "response_format" in resp.text


def _entry(text: str, usage: dict[str, Any], seconds: float, request: dict[str, Any]) -> dict[str, Any]:
    return {"text": text, "usage": usage, "seconds": round(seconds, 4), "request": request}


def _snippet(text: str, n: int = 120) -> str:
    return " ".join(text.split())[:n]


def _read_completion(resp: Any) -> tuple[str, str | None, dict[str, Any]]:
    """``(text, error, usage)`` from a 200 response; garbage bodies become errors."""
    try:
        data = resp.json()
    except (json.JSONDecodeError, ValueError):
        return "", f"invalid response body (not JSON): {_snippet(resp.text)}", {}
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return "", f"invalid response body (no choices[0].message): {_snippet(json.dumps(data))}", {}
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        refusal = choice.get("message", {}).get("refusal")
        return "", f"no content in reply{f' (refusal: {refusal})' if refusal else ''}", {}
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return content, None, usage or {}


class LocalLlamaBackend:
    """A GGUF model run in-process by ``llama-cpp-python`` (text-only).

    Args:
        model_path: the ``.gguf`` file (see :func:`terraloc.rag.models.resolve_model`).
        n_ctx: context length in tokens.
        n_threads: CPU threads (default: all cores).
        cache: an on-disk cache, or ``None``.
        chat_format: llama.cpp chat format (``None`` = the template stored in the GGUF).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        cache: ResponseCache | None = None,
        chat_format: str | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.cache = cache
        self.chat_format = chat_format
        st = self.model_path.stat()
        # Cache identity: the model file (name, size, mtime) rather than its 1 GB of bytes.
        self.identity = f"local:{self.model_path.name}:{st.st_size}:{int(st.st_mtime)}"
        self._llm: Any = None

    def _load(self) -> Any:
        if self._llm is None:
            from terraloc.extras import require

            Llama = require("llama_cpp", "llm").Llama
            self._llm = Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                chat_format=self.chat_format,
                verbose=False,
            )
        return self._llm

    def chat(self, req: ChatRequest) -> ChatResult:
        """Run one request; failures are returned as errors, never raised."""
        body = {
            "messages": [_text_only(m) for m in req.messages],
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "seed": req.seed,
            "response_schema": req.schema,
        }
        key = ResponseCache.key(self.identity, body)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return ChatResult(hit["text"], None, True, float(hit.get("seconds", 0.0)), 0, hit.get("usage", {}))
        start = time.perf_counter()
        try:
            llm = self._load()
            fmt = {"type": "json_object", "schema": req.schema} if req.schema is not None else None
            out = llm.create_chat_completion(
                messages=body["messages"],
                temperature=req.temperature,
                max_tokens=req.max_tokens,
                seed=req.seed,
                response_format=fmt,
            )
            text = out["choices"][0]["message"]["content"] or ""
            usage = dict(out.get("usage") or {})
        except (RuntimeError, ValueError, KeyError) as exc:
            return ChatResult("", f"local model failed: {exc}", False, time.perf_counter() - start, 1)
        if self.cache is not None:
            self.cache.put(key, _entry(text, usage, time.perf_counter() - start, body))
        return ChatResult(text, None, False, time.perf_counter() - start, 1, usage)

    def chat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Run the requests one after another (the model uses all threads for each)."""
        return [self.chat(r) for r in requests]


def _text_only(message: dict[str, Any]) -> dict[str, Any]:
    """Drop image parts: the local backend is text-only."""
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return {"role": message["role"], "content": content}
