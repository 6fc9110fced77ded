"""The accuracy thresholds of the papers (km), in one place: ``accuracy`` dicts are keyed by their text."""

from __future__ import annotations

#: percent of photos within ``<=`` each distance is reported (Im2GPS3k, YFCC4k, ... as published)
THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)
#: the keys of every ``accuracy`` dict terraloc writes (``"1"``, ``"25"``, ...)
THRESHOLD_KEYS: tuple[str, ...] = tuple(str(t) for t in THRESHOLDS_KM)
