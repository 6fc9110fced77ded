"""Geodesy: coordinates, distances, spherical averages, projections and base maps.

Depends on numpy only. Coordinates are ``(lat, lon)`` in decimal degrees everywhere.
"""

from terraloc.geo.coords import validate_latlon
from terraloc.geo.distance import EARTH_RADIUS_KM, haversine_km, pairwise_haversine_km
from terraloc.geo.projection import equal_earth
from terraloc.geo.sphere import from_unit_vectors, spherical_mean, to_unit_vectors

__all__ = [
    "EARTH_RADIUS_KM",
    "equal_earth",
    "from_unit_vectors",
    "haversine_km",
    "pairwise_haversine_km",
    "spherical_mean",
    "to_unit_vectors",
    "validate_latlon",
]
