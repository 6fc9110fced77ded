"""Geolocation heads on top of the encoders (GeoCLIP, GeoSURGE, fusion)."""
