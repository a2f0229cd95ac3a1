"""WSGI entry point, for the split deployment where a WSGI server (gunicorn) serves HTTP and Daphne only /ws/.

The embedded defaults serve everything from Daphne (geoweb/asgi.py). Under WSGI no inference worker starts inside the
web process: run `manage.py run_worker` beside it (docs/scaleout.md).
"""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "geoweb.settings")
application = get_wsgi_application()
