"""Parsing LLM replies: JSON first, tolerant fallbacks, failures kept with the raw text."""

from __future__ import annotations

import math

import pytest

from terraloc.rag.parse import parse_answer


@pytest.mark.parametrize(
    ("text", "lat", "lon", "method"),
    [
        ('{"lat": 48.8566, "lon": 2.3522, "reason": "Eiffel tower"}', 48.8566, 2.3522, "json"),
        ('{"latitude": -33.86, "longitude": 151.21}', -33.86, 151.21, "json"),
        ('{"lat": "40.7128", "lng": "-74.0060"}', 40.7128, -74.006, "json"),
        ('{"location": {"lat": 35.68, "lon": 139.69}, "reason": "signs"}', 35.68, 139.69, "json"),
        ("[51.5, -0.12]", 51.5, -0.12, "json"),
        ('Here you go:\n```json\n{"lat": 41.9, "lon": 12.5}\n```\nHope it helps', 41.9, 12.5, "fence"),
        ('My answer is {"lat": 52.52, "lon": 13.405, "reason": "a {curly} reason"} done.', 52.52, 13.405, "object"),
        ("{'lat': 19.43, 'lon': -99.13,}", 19.43, -99.13, "json"),
        ("Latitude: 37.7749, Longitude: -122.4194", 37.7749, -122.4194, "labelled"),
        ("lat = 10.5 S, lon = 20.25 W", -10.5, -20.25, "labelled"),
        ("The photo was taken at 48°51'24\"N 2°21'03\"E.", 48.85667, 2.35083, "dms"),
        ("about 33°52′S, 151°12′E", -33.86667, 151.2, "dms"),
        ("I think it is 40.4° N, 3.7° W (Madrid).", 40.4, -3.7, "hemisphere"),
        ("Coordinates: (34.0522, -118.2437)", 34.0522, -118.2437, "pair"),
    ],
)
def test_parses(text: str, lat: float, lon: float, method: str) -> None:
    a = parse_answer(text)
    assert a.ok, a.error
    assert a.method == method
    assert a.lat == pytest.approx(lat, abs=1e-4)
    assert a.lon == pytest.approx(lon, abs=1e-4)
    assert a.raw == text


def test_reason_is_kept() -> None:
    a = parse_answer('{"lat": 1.5, "lon": 2.5, "reason": "palm trees"}')
    assert a.reason == "palm trees"
    assert a.to_json()["lat"] == 1.5


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ('{"lat": 123.0, "lon": 10.0}', "out of range"),
        ('{"lat": 10.0, "lon": 190.0}', "out of range"),
        ('{"lat": 0, "lon": 0, "reason": "unknown"}', "placeholder"),
        ("I'm sorry, I cannot determine where this photo was taken.", "refused"),
        ("It looks like a beach somewhere warm.", "no coordinates"),
        ('{"lat": "somewhere", "lon": "north"}', "no coordinates"),
        ('{"lat": null, "lon": null}', "no coordinates"),
        ("<html>502 Bad Gateway</html>", "no coordinates"),
    ],
)
def test_failures_keep_raw_text_and_never_zero(text: str, error: str) -> None:
    a = parse_answer(text)
    assert not a.ok
    assert error in (a.error or "")
    assert math.isnan(a.lat) and math.isnan(a.lon)
    assert a.raw == text
    assert a.to_json()["lat"] is None


def test_none_is_a_failure() -> None:
    assert parse_answer(None).error == "empty reply"


def test_out_of_range_json_falls_through_to_valid_text() -> None:
    # An invalid JSON pair is not accepted, but a valid pair later in the text is.
    a = parse_answer('{"lat": 200, "lon": 10} corrected: 45.5, 9.2')
    assert a.ok and a.method == "pair" and a.lat == 45.5


def test_integers_without_decimals_are_not_a_pair() -> None:
    # "in 2 or 3 days" style numbers must not become coordinates.
    assert not parse_answer("I saw 2, 3 buildings").ok


def test_unicode_minus() -> None:
    a = parse_answer('{"lat": "−22.9", "lon": "−43.2"}')
    assert a.ok and a.lat == -22.9 and a.lon == -43.2
