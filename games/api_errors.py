"""Every error the JSON API (/api/) answers is JSON, whoever produced it: a view, Django's 404 or 405, the CSRF
check, the request size limit or a rate limit. The status and headers such as Allow and Retry-After are kept."""
from __future__ import annotations

from django.http import JsonResponse

API_PREFIX = "/api/"
MESSAGES = {
    400: "bad request",
    403: "forbidden: the CSRF token is missing or wrong (send the csrftoken cookie's value as X-CSRFToken)",
    404: "not found: no such game for this player",
    405: "method not allowed",
    413: "the request body is too large",
    429: "too many requests: please wait and try again",
}
KEPT_HEADERS = ("Allow", "Retry-After", "Vary", "Cache-Control")


class JsonApiErrorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(API_PREFIX) or response.status_code < 400 \
                or response.get("Content-Type", "").startswith("application/json"):
            return response
        message = MESSAGES.get(response.status_code, response.reason_phrase.lower())
        if response.status_code == 405 and response.has_header("Allow"):
            message += f"; use {response['Allow']}"
        json_response = JsonResponse({"error": message}, status=response.status_code)
        for header in KEPT_HEADERS:
            if response.has_header(header):
                json_response[header] = response[header]
        return json_response
