"""ASGI middleware: request ids, structured JSON access logs, body-size limits, security headers.

Pure ASGI (no ``BaseHTTPMiddleware``) so that request bodies stream through untouched and a
client that disconnects mid-upload costs nothing but the bytes already read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "terraloc.serve.access"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class PayloadTooLarge(Exception):
    """The request body is larger than the limit for its route (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


class BodyTimeout(Exception):
    """The request body arrived too slowly (HTTP 408; the connection is closed)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message`` plus any ``extra`` fields."""

    _skip = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._skip and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """Send ``terraloc.serve`` and uvicorn's error logs to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("terraloc.serve", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class RequestContextMiddleware:
    """Give each HTTP request an id (``X-Request-ID``), log it as JSON, and add security headers.

    An incoming ``X-Request-ID`` made of 1-64 safe characters is kept (so a caller can trace a
    request through its own logs); otherwise a fresh one is made.
    """

    def __init__(self, app: ASGIApp, logger_name: str = ACCESS_LOGGER) -> None:
        self.app = app
        self.log = logging.getLogger(logger_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        t0 = time.perf_counter()
        info: dict[str, Any] = {"status": 0, "bytes_out": 0, "bytes_in": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                info["bytes_in"] += len(message.get("body", b""))
            elif message["type"] == "http.disconnect":
                info["disconnected"] = True
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                headers.append((b"x-frame-options", b"DENY"))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                info["bytes_out"] += len(message.get("body", b""))
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, counting_receive, send_with_headers)
        except BaseException as exc:
            error = exc
            raise
        finally:
            client = scope.get("client")
            extra = {
                "event": "request",
                "request_id": request_id,
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": info["status"] or (500 if error else 0),
                "duration_ms": round((time.perf_counter() - t0) * 1000.0, 2),
                "bytes_in": info["bytes_in"],
                "bytes_out": info["bytes_out"],
                "client": f"{client[0]}:{client[1]}" if client else None,
                "user_agent": _header(scope, b"user-agent"),
            }
            if info.get("disconnected"):
                extra["client_disconnected"] = True
            if error is not None:
                extra["error"] = type(error).__name__
            self.log.info("%s %s %s", scope.get("method"), scope.get("path"), extra["status"], extra=extra)


class BodyLimitMiddleware:
    """Refuse request bodies above ``limit_for(path)`` bytes with 413, without buffering them.

    A declared ``Content-Length`` above the limit is answered before any body is read; a chunked
    body is counted as it streams, and reading past the limit raises :class:`PayloadTooLarge`
    inside the endpoint (mapped to 413 by the app).
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            body = json.dumps(
                {"detail": f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class BodyTimeoutMiddleware:
    """Close request bodies that arrive too slowly (slow-loris defence), with 408.

    uvicorn has no timeout on reading a request body, so a client that trickles bytes would hold
    its upload slot forever. Each ``receive()`` of the body waits at most ``idle_timeout_s`` and,
    after ``grace_s`` seconds, no longer than the moment the body falls behind ``min_rate`` bytes
    per second (``received >= min_rate * (elapsed - grace_s)``). Past that :class:`BodyTimeout`
    is raised inside the endpoint (mapped to 408 with ``Connection: close`` by the app).

    Args:
        app: the wrapped ASGI app.
        idle_timeout_s: longest wait for the next chunk, in seconds.
        min_rate: bytes per second required after the grace period (0 = no rate check).
        grace_s: seconds before the rate applies.
    """

    def __init__(self, app: ASGIApp, idle_timeout_s: float, min_rate: int, grace_s: float) -> None:
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        self.min_rate = min_rate
        self.grace_s = grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        t0 = time.monotonic()
        seen = 0
        complete = False

        async def guarded_receive() -> Message:
            nonlocal seen, complete
            if complete:
                return await receive()  # e.g. waiting for a disconnect: not a body read
            now = time.monotonic()
            timeout = self.idle_timeout_s
            if self.min_rate > 0:
                timeout = min(timeout, t0 + self.grace_s + seen / self.min_rate - now)
            try:
                if timeout <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                elapsed = time.monotonic() - t0
                raise BodyTimeout(
                    f"request body arrived too slowly ({seen} bytes in {elapsed:.1f} s; required: a chunk at "
                    f"least every {self.idle_timeout_s:g} s and {self.min_rate} bytes/s after {self.grace_s:g} s)"
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, guarded_receive, send)
