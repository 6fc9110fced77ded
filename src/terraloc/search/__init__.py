"""Gallery search: GPS galleries on disk and flat / FAISS / hierarchical indexes.

Depends on :mod:`terraloc.geo` (and on :mod:`terraloc.encoders` only to build galleries).
"""

from terraloc.search.gallery import Gallery, build_gallery, default_gallery
from terraloc.search.index import SearchIndex, SearchResult, make_index

__all__ = ["Gallery", "SearchIndex", "SearchResult", "build_gallery", "default_gallery", "make_index"]
