"""Galleries, indexes and the reference-photo database."""
