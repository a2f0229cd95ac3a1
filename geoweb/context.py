"""Template context shared by every page: map settings."""
import functools

from django.conf import settings
from django.urls import reverse


@functools.cache
def _basemap_url() -> str:
    from predictor import places

    return f"{reverse('basemap')}?v={places.basemap_version()}"


def map_settings(request):
    return {
        "map_tile_url": settings.MAP_TILE_URL,
        "map_tile_attribution": settings.MAP_TILE_ATTRIBUTION,
        "basemap_url": _basemap_url(),
    }
