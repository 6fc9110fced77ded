"""Turning an LLM's reply into coordinates, tolerantly but never inventing one.

Order of attempts (the first that yields a valid pair wins):

1. the whole reply as JSON (``{"lat": ..., "lon": ...}``, also ``latitude``/``longitude``/
   ``lng``/``long``, one level of nesting such as ``{"location": {...}}``, or ``[lat, lon]``);
2. JSON inside Markdown code fences (```` ```json ... ``` ````);
3. the first balanced ``{...}`` object anywhere in the text;
4. labelled numbers (``Latitude: 48.85, Longitude: 2.35``);
5. degrees-minutes-seconds with hemispheres (``48°51'24"N 2°21'03"E``);
6. decimal degrees with hemispheres (``48.85° N, 2.35° E``);
7. a bare ``lat, lon`` pair of decimal numbers (``(48.8566, 2.3522)``).

A pair outside ``[-90, 90] x [-180, 180]``, the placeholder ``(0, 0)``, a refusal or text with no
coordinates is a *failure*: :class:`ParsedAnswer` keeps the raw text and the reason, and its
``lat``/``lon`` are ``nan``; it is never turned into ``(0, 0)``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

_LAT_KEYS = ("lat", "latitude", "Latitude", "LAT", "Lat")
_LON_KEYS = ("lon", "lng", "long", "longitude", "Longitude", "LON", "Lon", "Lng", "Long")
_FENCE_RE = re.compile(r"```(?:json|JSON|javascript|js)?\s*\n?(.*?)```", re.DOTALL)
_NUM = r"[-+−]?\d{1,3}(?:\.\d+)?"
_LABELLED_LAT = re.compile(r"\blat(?:itude)?\b[\"']?\s*[:=]?\s*[\"']?(" + _NUM + r")\s*°?\s*([NS])?", re.IGNORECASE)
_LABELLED_LON = re.compile(
    r"\b(?:lon|lng|long|longitude)\b[\"']?\s*[:=]?\s*[\"']?(" + _NUM + r")\s*°?\s*([EW])?", re.IGNORECASE
)
_DMS = re.compile(
    r"(\d{1,3})\s*[°º]\s*(\d{1,2}(?:\.\d+)?)\s*['′’]\s*(?:(\d{1,2}(?:\.\d+)?)\s*(?:[\"″”]|''|′′))?\s*([NSEWnsew])\b"
)
_HEMI = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*°?\s*([NSEW])\b")
_PAIR = re.compile(r"(" + r"[-+−]?\d{1,3}\.\d+" + r")\s*[,;/]\s*(" + r"[-+−]?\d{1,3}\.\d+" + r")")
_REFUSAL = re.compile(
    r"\b(i\s*(?:can(?:'|no)?t|cannot|am unable to|'m unable to|am not able to)|unable to determine|"
    r"not possible to determine|cannot be determined|as an ai)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedAnswer:
    """The outcome of parsing one reply.

    Attributes:
        lat, lon: degrees, ``nan`` on failure.
        reason: the model's stated reason (JSON ``reason`` field), if any.
        method: which attempt succeeded (``json``, ``fence``, ``object``, ``labelled``, ``dms``,
            ``hemisphere``, ``pair``) or ``None`` on failure.
        error: why parsing failed, ``None`` on success.
        raw: the reply as received.
    """

    lat: float
    lon: float
    reason: str | None
    method: str | None
    error: str | None
    raw: str

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "lat": self.lat if self.ok else None,
            "lon": self.lon if self.ok else None,
            "reason": self.reason,
            "method": self.method,
            "error": self.error,
            "raw": self.raw,
        }


class _Bad(Exception):
    """A pair was found but is not acceptable (out of range, placeholder)."""


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([-+−]?\d+(?:\.\d+)?)\s*°?\s*([NSEWnsew])?\s*", value)
        if not m:
            return None
        v = float(m.group(1).replace("−", "-"))
        if m.group(2) and m.group(2).upper() in "SW":
            v = -abs(v)
        return v
    return None


def _from_obj(obj: Any) -> tuple[float, float, str | None] | None:
    """Find lat/lon in a decoded JSON value (dict, nested dict or [lat, lon] list)."""
    if isinstance(obj, list) and len(obj) == 2:
        a, b = _num(obj[0]), _num(obj[1])
        if a is not None and b is not None:
            return a, b, None
        return None
    if isinstance(obj, list):
        for item in obj:
            got = _from_obj(item)
            if got is not None:
                return got
        return None
    if not isinstance(obj, dict):
        return None
    lat = next((_num(obj[k]) for k in _LAT_KEYS if k in obj), None)
    lon = next((_num(obj[k]) for k in _LON_KEYS if k in obj), None)
    reason = obj.get("reason", obj.get("reasoning", obj.get("explanation")))
    reason = None if reason is None else str(reason)
    if lat is not None and lon is not None:
        return lat, lon, reason
    for key in ("coordinates", "coords", "location", "gps", "answer", "prediction", "result"):
        if key in obj:
            got = _from_obj(obj[key])
            if got is not None:
                return got[0], got[1], got[2] or reason
    return None


def _balanced_objects(text: str) -> list[str]:
    """Substrings of ``text`` that are balanced ``{...}`` groups (outermost first)."""
    out, depth, start, in_str, esc = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                out.append(text[start : i + 1])
    return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        pass
    # Common near-JSON: single quotes, trailing commas.
    fixed = re.sub(r",\s*([}\]])", r"\1", text.replace("'", '"'))
    try:
        return json.loads(fixed)
    except (json.JSONDecodeError, ValueError):
        return None


def _dms_value(deg: str, minutes: str, seconds: str | None, hemi: str) -> float:
    v = float(deg) + float(minutes) / 60.0 + (float(seconds) / 3600.0 if seconds else 0.0)
    return -v if hemi.upper() in "SW" else v


def _hemisphere_pair(matches: list[tuple[float, str]]) -> tuple[float, float] | None:
    lat = next((v for v, h in matches if h in "NS"), None)
    lon = next((v for v, h in matches if h in "EW"), None)
    if lat is None or lon is None:
        return None
    return lat, lon


def _check(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise _Bad("coordinates are not finite numbers")
    if abs(lat) > 90 or abs(lon) > 180:
        raise _Bad(f"coordinates ({lat:g}, {lon:g}) are out of range")
    if lat == 0 and lon == 0:
        raise _Bad("placeholder answer (0, 0)")


def parse_answer(raw: str | None) -> ParsedAnswer:
    """Parse one LLM reply; see the module docstring for the order of attempts.

    Args:
        raw: the reply text (``None`` or empty is a failure).

    Returns:
        A :class:`ParsedAnswer`; on failure ``lat``/``lon`` are ``nan`` and ``error`` says why.
    """
    text = "" if raw is None else str(raw)
    if not text.strip():
        return ParsedAnswer(math.nan, math.nan, None, None, "empty reply", text)
    first_bad: str | None = None

    def accept(method: str, lat: float, lon: float, reason: str | None) -> ParsedAnswer | None:
        nonlocal first_bad
        try:
            _check(lat, lon)
        except _Bad as exc:
            first_bad = first_bad or str(exc)
            return None
        return ParsedAnswer(lat, lon, reason, method, None, text)

    # 1-3: JSON, fenced JSON, any balanced object.
    json_sources: list[tuple[str, str]] = [("json", text.strip())]
    json_sources += [("fence", m.group(1).strip()) for m in _FENCE_RE.finditer(text)]
    json_sources += [("object", s) for s in _balanced_objects(text)]
    for method, src in json_sources:
        obj = _loads(src)
        if obj is None:
            continue
        got = _from_obj(obj)
        if got is not None:
            res = accept(method, *got)
            if res is not None:
                return res
    # 4: labelled numbers.
    mlat, mlon = _LABELLED_LAT.search(text), _LABELLED_LON.search(text)
    if mlat and mlon:
        lat = float(mlat.group(1).replace("−", "-"))
        lon = float(mlon.group(1).replace("−", "-"))
        if mlat.group(2) and mlat.group(2).upper() == "S":
            lat = -abs(lat)
        if mlon.group(2) and mlon.group(2).upper() == "W":
            lon = -abs(lon)
        res = accept("labelled", lat, lon, None)
        if res is not None:
            return res
    # 5: degrees-minutes-seconds.
    dms = [(_dms_value(d, m, s, h), h.upper()) for d, m, s, h in _DMS.findall(text)]
    pair = _hemisphere_pair(dms)
    if pair is not None:
        res = accept("dms", *pair, None)
        if res is not None:
            return res
    # 6: decimal degrees with hemisphere letters.
    hemi = [(-float(v) if h in "SW" else float(v), h) for v, h in _HEMI.findall(text)]
    pair = _hemisphere_pair(hemi)
    if pair is not None:
        res = accept("hemisphere", *pair, None)
        if res is not None:
            return res
    # 7: a bare decimal pair.
    for a, b in _PAIR.findall(text):
        res = accept("pair", float(a.replace("−", "-")), float(b.replace("−", "-")), None)
        if res is not None:
            return res
    if first_bad is not None:
        return ParsedAnswer(math.nan, math.nan, None, None, first_bad, text)
    if _REFUSAL.search(text):
        return ParsedAnswer(math.nan, math.nan, None, None, "the model refused or could not answer", text)
    return ParsedAnswer(math.nan, math.nan, None, None, "no coordinates found in the reply", text)
