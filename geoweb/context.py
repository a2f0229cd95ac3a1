"""Template context shared by every page: map settings."""
from django.conf import settings


def map_settings(request):
    return {
        "map_tile_url": settings.MAP_TILE_URL,
        "map_tile_attribution": settings.MAP_TILE_ATTRIBUTION,
    }
