"""What users see while the database cannot be reached: 503 with Retry-After, as a page for browsers, as
`{"error": ...}` for the JSON API (the form its other errors take, which the play page shows), as text otherwise.

Django turns every exception into a response inside each middleware layer, so two doors lead here: the middleware's
`process_exception` for errors raised by views and templates, and `server_error` (the project's handler500) for
errors raised by other middleware, such as the session being saved after the view has run.
"""
from __future__ import annotations

import logging
import sqlite3
import sys

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseServerError, JsonResponse
from django.template import loader
from django.utils.deprecation import MiddlewareMixin
from django.views import defaults

logger = logging.getLogger(__name__)

# SQLSTATE classes that mean "the server cannot serve you now", not "your query is wrong": connection exception,
# insufficient resources (too many connections), operator intervention (shutting down, starting up).
_UNAVAILABLE_SQLSTATE_CLASSES = {"08", "53", "57"}
_UNAVAILABLE_SQLITE_MESSAGES = ("unable to open database file", "database is locked", "disk i/o error")


def is_database_unavailable(error: BaseException) -> bool:
    """True when `error` says the database cannot be reached or is not serving, rather than a bug in a query."""
    if isinstance(error, InterfaceError):
        # Django raises it when it uses a connection that the server or network has already closed.
        return True
    if not isinstance(error, OperationalError):
        return False
    cause = error.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return str(cause).lower().startswith(_UNAVAILABLE_SQLITE_MESSAGES)
    sqlstate = getattr(cause, "sqlstate", "missing")
    if sqlstate is None:
        # psycopg gives no SQLSTATE when the failure happened below SQL: refused, reset, timed out, closed.
        return True
    return isinstance(sqlstate, str) and sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES


def preferred_error_format(request: HttpRequest) -> str:
    """"json" for the JSON API, "html" for browsers (and clients that do not say), "text" for the rest (curl)."""
    accept = request.headers.get("Accept", "")
    if "/api/" in request.path or request.content_type == "application/json" or (
            "application/json" in accept and "text/html" not in accept):
        return "json"
    if not accept or "text/html" in accept:
        return "html"
    return "text"


def database_unavailable_response(request: HttpRequest) -> HttpResponse:
    retry_after = settings.OUTAGE_RETRY_AFTER_S
    message = (f"GeoWeb cannot reach its database just now. Nothing you sent was saved; please try again in "
               f"{retry_after} seconds.")
    form = preferred_error_format(request)
    if form == "json":
        response = JsonResponse({"error": message, "retry_after": retry_after}, status=503)
    elif form == "text":
        response = HttpResponse(f"503 Service Unavailable: {message}\n", status=503,
                                content_type="text/plain; charset=utf-8")
    else:
        # Rendered without the request: context processors would read the session, which lives in the database.
        body = loader.render_to_string("503.html", {"retry_after": retry_after})
        response = HttpResponse(body, status=503)
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Answers a view's database-unavailable error with the 503 page instead of a 500."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_unavailable(exception):
            return None
        logger.error("database unavailable while serving %s %s: %s", request.method, request.path, exception)
        return database_unavailable_response(request)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the 503 page when the uncaught error was the database being away, Django's 500 otherwise."""
    error = sys.exc_info()[1]
    if error is not None and is_database_unavailable(error):
        return database_unavailable_response(request)
    form = preferred_error_format(request)
    if form == "json":
        return JsonResponse({"error": "Something went wrong on the server. Please try again."}, status=500)
    if form == "text":
        return HttpResponseServerError("500 Internal Server Error\n", content_type="text/plain; charset=utf-8")
    return defaults.server_error(request)
