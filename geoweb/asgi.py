"""ASGI entry point: HTTP through Django, websockets through Channels (same-origin only, authenticated)."""
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "geoweb.settings")
# Django must be set up before anything imports models (what get_asgi_application() does first).
django.setup(set_prefix=False)

from geoweb.http_handler import PooledSyncASGIHandler  # noqa: E402

django_asgi_app = PooledSyncASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from geoweb.websocket_origin import SameOriginValidator  # noqa: E402
from predictor.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Scheme, host and port of the page must be this site's (AllowedHostsOriginValidator checks the host only).
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

from predictor.worker import with_embedded_worker  # noqa: E402

# With settings.EMBEDDED_WORKER (the default without Redis), the first request in each server process starts that
# process's inference worker (a child process); the setting is read then, not at import.
application = with_embedded_worker(application)

import threading  # noqa: E402

from predictor import places  # noqa: E402

# The first map of a fresh process must not wait for the countries to load: do it now, beside the server.
threading.Thread(target=places.warm_up, name="basemap-warm-up", daemon=True).start()
