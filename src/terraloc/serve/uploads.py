"""Reading uploads from a request into memory: multipart/form-data or JSON with base64.

Nothing is written to disk: multipart bodies are parsed as they stream (python-multipart's
low-level parser) into ``bytes`` with a per-file size limit, unlike Starlette's form parser which
spools files over 1 MB to temporary files. Client file names are kept only as labels (base name,
printable, at most 200 characters) and never used as paths.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from terraloc.serve.middleware import BodyTimeout, PayloadTooLarge

_LABEL_RE = re.compile(r"[^\w .,()+=@#-]")
#: Longest multipart boundary accepted (RFC 2046 allows 70 characters).
MAX_BOUNDARY = 200


class BadRequest(ValueError):
    """The request is malformed or misses a field (HTTP 400/422 with ``status``)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class UnsupportedContentType(BadRequest):
    """The request body is neither multipart/form-data nor JSON (HTTP 415)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=415)


class FileTooLarge(Exception):
    """One uploaded image is larger than the per-image limit (HTTP 413)."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(f"{name}: upload of {size} bytes exceeds the limit of {limit} bytes")


@dataclass
class Upload:
    """One uploaded image: its bytes and a display label (never a path)."""

    name: str
    data: bytes


@dataclass
class ParsedBody:
    """Images and simple fields from a request body."""

    files: list[Upload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis), for echoing client input in messages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_label(name: str | None, default: str) -> str:
    """A printable label from a client-supplied file name: base name only, no path, <= 200 chars."""
    if not name:
        return default
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _LABEL_RE.sub("_", base).strip(" .")
    return base[:200] or default


async def read_multipart(request: Request, boundary: bytes, max_file_bytes: int) -> ParsedBody:
    """Parse a multipart body as it streams, keeping parts in memory.

    Args:
        request: the incoming request.
        boundary: the multipart boundary from ``Content-Type``.
        max_file_bytes: largest accepted file part (bytes); a larger part raises :class:`FileTooLarge`
            as soon as it is seen, before the rest is read.
    """
    out = ParsedBody()
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "chunks": [], "size": 0}

    def on_part_begin() -> None:
        state.update(headers={}, chunks=[], size=0)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["size"] += end - start
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        is_file = b"filename" in opts
        limit = max_file_bytes if is_file else 64 * 1024
        if state["size"] > limit:
            name = opts.get(b"filename", opts.get(b"name", b"field")).decode("utf-8", "replace")
            if is_file:
                raise FileTooLarge(safe_label(name, "upload"), state["size"], limit)
            raise BadRequest(f"form field '{clip(name)}' is longer than {limit} bytes")
        state["chunks"].append(data[start:end])

    def on_part_end() -> None:
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        payload = b"".join(state["chunks"])
        if b"filename" in opts:
            label = safe_label(opts[b"filename"].decode("utf-8", "replace"), f"upload-{len(out.files) + 1}")
            if name in ("file", "files"):
                out.files.append(Upload(label, payload))
        else:
            out.fields[name] = payload.decode("utf-8", "replace")
        state["chunks"] = []

    if len(boundary) > MAX_BOUNDARY:
        raise BadRequest(f"multipart boundary is {len(boundary)} characters long; the limit is {MAX_BOUNDARY}", 400)
    callbacks: Any = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (FileTooLarge, BadRequest, PayloadTooLarge, BodyTimeout, ClientDisconnect):
        raise
    except Exception as exc:  # python-multipart parse errors
        raise BadRequest(f"malformed multipart body: {exc}", status=400) from None
    return out


def _decode_b64(value: Any, where: str, max_file_bytes: int) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{where}' must be a non-empty base64 string")
    if value.startswith("data:"):
        value = value.partition(",")[2]  # data URL: keep the payload
    if len(value) * 3 // 4 > max_file_bytes + 3:
        raise FileTooLarge(where, len(value) * 3 // 4, max_file_bytes)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"'{where}' is not valid base64") from None
    if len(data) > max_file_bytes:
        raise FileTooLarge(where, len(data), max_file_bytes)
    return data


def json_depth(doc: Any, stop_after: int) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), counted without recursion;
    counting stops once it exceeds ``stop_after``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > stop_after:
                break
            stack.extend((v, depth) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


async def read_json(request: Request, max_file_bytes: int, batch: bool, max_depth: int = 32) -> ParsedBody:
    """Parse ``{"image": BASE64, "name"?, "top_k"?}`` or, for a batch,
    ``{"images": [{"image": BASE64, "name"?} | BASE64, ...], "top_k"?}``.

    Raises:
        BadRequest: not JSON (400), nested deeper than ``max_depth`` (400), or a missing/bad field (422).
    """
    raw = await request.body()
    too_deep = BadRequest(f"JSON body is nested deeper than {max_depth} levels", status=400)
    try:
        doc = json.loads(raw)  # the C parser raises RecursionError on '[' * 100000, cheaply
    except RecursionError:
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", status=400) from None
    if json_depth(doc, max_depth) > max_depth:
        raise too_deep
    if not isinstance(doc, dict):
        raise BadRequest("JSON body must be an object")
    out = ParsedBody()
    if "top_k" in doc:
        out.fields["top_k"] = str(doc["top_k"])
    if batch:
        items = doc.get("images")
        if not isinstance(items, list) or not items:
            raise BadRequest("missing field 'images' (a non-empty list of base64 strings or {image, name} objects)")
        for i, item in enumerate(items):
            obj = item if isinstance(item, dict) else {"image": item}
            label = safe_label(str(obj.get("name") or ""), f"image-{i + 1}")
            out.files.append(Upload(label, _decode_b64(obj.get("image"), f"images[{i}].image", max_file_bytes)))
    else:
        if "image" not in doc:
            raise BadRequest("missing field 'image' (base64-encoded image bytes)")
        label = safe_label(str(doc.get("name") or ""), "upload")
        out.files.append(Upload(label, _decode_b64(doc["image"], "image", max_file_bytes)))
    return out


async def read_uploads(request: Request, max_file_bytes: int, batch: bool, max_json_depth: int = 32) -> ParsedBody:
    """Dispatch on ``Content-Type``: multipart/form-data (field ``file``, or ``files``) or JSON."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype == b"multipart/form-data":
        boundary = opts.get(b"boundary")
        if not boundary:
            raise BadRequest("multipart/form-data without a boundary", status=400)
        body = await read_multipart(request, boundary, max_file_bytes)
        if not body.files:
            raise BadRequest("missing form field 'file' (the image to locate, sent as a file upload)")
        return body
    if ctype in (b"application/json", b"text/json"):
        return await read_json(request, max_file_bytes, batch, max_json_depth)
    shown = clip(ctype.decode("latin-1")) or "none"
    raise UnsupportedContentType(
        f"unsupported Content-Type '{shown}'; send multipart/form-data with a 'file' field, "
        "or application/json with base64 in 'image'"
    )
