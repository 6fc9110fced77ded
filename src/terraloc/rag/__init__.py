"""Retrieval-augmented geolocation (Img2Loc / G3): candidates, prompts, LLM clients, parsing, selection.

Depends on :mod:`terraloc.geo` (and, for verification, :mod:`terraloc.encoders`).
"""

from terraloc.rag.candidates import Candidate, CandidateSet, CandidateSource

__all__ = ["Candidate", "CandidateSet", "CandidateSource"]
