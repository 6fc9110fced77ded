"""HTTP service and web page over a geolocator: ``terraloc serve``.

``create_app(settings, loader)`` builds the FastAPI application; ``ServeSettings`` holds its
limits; any object with ``predict(images, top_k)`` and ``describe()`` (:class:`Predictor`) can be
served.
"""

from terraloc.serve.app import create_app
from terraloc.serve.predictor import Predictor
from terraloc.serve.settings import ServeSettings

__all__ = ["Predictor", "ServeSettings", "create_app"]
