"""Settings of the HTTP service (one frozen dataclass, filled from the command line)."""

from __future__ import annotations

from dataclasses import dataclass, field

MB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Limits and switches of ``terraloc serve``.

    Attributes:
        host: interface to bind; loopback by default.
        port: TCP port.
        max_upload_bytes: largest accepted image file, in bytes (413 above it).
        max_pixels: largest accepted image, in pixels (width x height; 422 above it, which is
            how decompression bombs are refused before they are decoded).
        max_batch_images: most images in one ``/v1/predict/batch`` request.
        max_batch_bytes: largest total of image bytes in one batch request.
        workers: inference threads (each runs one request at a time).
        queue_size: requests allowed to wait for a worker; one more is answered 503.
        default_top_k: ``top_k`` when the request gives none.
        max_top_k: largest ``top_k`` a request may ask for.
        api_key: when set, ``/v1/*`` requires ``Authorization: Bearer KEY`` or ``X-API-Key``.
        cors_origins: origins allowed by CORS; empty = CORS off (no CORS headers at all).
        tile_url: optional XYZ tile URL template for the web page's base map
            (``https://.../{z}/{x}/{y}.png``); without it the page draws bundled country outlines.
        tile_attribution: attribution text shown with those tiles.
        body_idle_timeout_s: longest wait for the next piece of a request body, in seconds (408 after).
        min_upload_rate: slowest accepted upload after ``upload_grace_s``, in bytes per second:
            a body must have delivered ``min_upload_rate * (elapsed - upload_grace_s)`` bytes at
            every moment, else 408 and the connection is closed (slow-loris defence).
        upload_grace_s: seconds an upload may take before the minimum rate applies.
        max_uploads: request bodies being read at once (503 beyond); bounded apart from the
            inference queue so that slow uploads never hold an inference slot.
        max_json_depth: deepest nesting of arrays/objects accepted in a JSON body (400 beyond).
        max_connections: open connections plus running requests the server accepts before it
            answers 503 (uvicorn's ``limit_concurrency``).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 20 * MB
    max_pixels: int = 100_000_000
    max_batch_images: int = 16
    max_batch_bytes: int = 64 * MB
    workers: int = 1
    queue_size: int = 8
    default_top_k: int = 5
    max_top_k: int = 100
    api_key: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    tile_url: str | None = None
    tile_attribution: str = ""
    body_idle_timeout_s: float = 15.0
    min_upload_rate: int = 2048
    upload_grace_s: float = 10.0
    max_uploads: int = 32
    max_json_depth: int = 32
    max_connections: int = 256

    def body_limit(self, path: str) -> int:
        """Largest request body accepted on ``path``, in bytes (base64 and multipart overhead included)."""
        payload = self.max_batch_bytes if path.rstrip("/").endswith("/batch") else self.max_upload_bytes
        return payload * 4 // 3 + 64 * 1024
