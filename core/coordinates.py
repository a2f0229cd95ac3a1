"""The one rule for a coordinate read from anywhere (files, forms, the API, training data). Django-free, so that
predictor.ml and the Im2GPS reader use it too."""
from __future__ import annotations

import math


def valid_coordinates(lat: float, lon: float) -> bool:
    """A finite latitude in [-90, 90] and longitude in [-180, 180]."""
    return math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0
