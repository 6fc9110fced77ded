"""How the service is run under uvicorn: its HTTP protocol and limits in one place.

uvicorn (h11) times out idle keep-alive connections, but not a client that sends its request
head slowly: :class:`GuardedH11Protocol` closes a connection whose request line and headers
have not all arrived ``header_timeout_s`` seconds after it opened (or after its previous
response). Slow *bodies* are cut off by :class:`~terraloc.serve.middleware.BodyTimeoutMiddleware`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from terraloc.errors import TerralocError
from terraloc.serve.predictor import Predictor
from terraloc.serve.settings import ServeSettings

#: Seconds a connection may take to deliver a complete request head.
HEADER_TIMEOUT_S = 10.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a timeout on receiving each request head."""

    header_timeout_s = HEADER_TIMEOUT_S

    def _arm_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        # their_state stays IDLE until a whole request head has been parsed.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` (besides the app, host and port)."""
    return {
        "http": GuardedH11Protocol,
        "log_config": None,
        "access_log": False,
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": 10,
        "limit_concurrency": settings.max_connections,
        "h11_max_incomplete_event_size": 64 * 1024,  # request line + headers
        "server_header": False,
    }


class ModelLoadError(TerralocError):
    """The model could not be loaded before serving (``terraloc serve`` exits 2)."""


def load_or_fail(loader: Callable[[], Predictor]) -> Predictor:
    """Load the model now; any failure becomes one line (:class:`ModelLoadError`)."""
    try:
        predictor = loader()
        predictor.describe()
    except TerralocError as exc:
        raise ModelLoadError(f"cannot load the model: {exc}") from None
    except Exception as exc:  # a model may fail in many ways; each is one line here
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ModelLoadError(f"cannot load the model: {type(exc).__name__}: {first}") from None
    return predictor
