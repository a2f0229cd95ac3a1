"""geoweb/asgi.py with Django's stock ASGI handler for HTTP instead of geoweb/http_handler.py, for bench_game_api.py
(--handler stock). Run it with GEOWEB_DB_CONN_MAX_AGE=0, as Django advises under ASGI: the stock handler runs each
request on a new thread, so a persistent connection would be left behind by every request."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "geoweb.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from geoweb.websocket_origin import SameOriginValidator  # noqa: E402
from predictor.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
