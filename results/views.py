"""Pages of /models/ (model cards and accuracy) and /results/ (people against models); thin over the selectors."""
from __future__ import annotations

from csp.constants import NONE
from csp.decorators import csp_replace
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from results import selectors


@require_GET
def models(request):
    return render(request, "results/models.html", {"page": selectors.models_page()})


@require_GET
def results(request):
    page = selectors.results_page()
    # The tables were rendered (and escaped) when the figures were computed: see results.services.
    body = mark_safe(page["body"]) if page else ""  # noqa: S308
    return render(request, "results/results.html", {"page": page, "body": body})


# matplotlib's SVG styles its shapes inline; nothing else may load or run in it.
@require_GET
@csp_replace({"default-src": [NONE], "style-src": ["'unsafe-inline'"], "script-src": [NONE]})
def chart(request, page, name):
    svg = selectors.chart_svg(page=page, name=name)
    if svg is None:
        raise Http404("No such chart")
    response = HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")
    response["Cache-Control"] = "public, max-age=300"
    return response


@require_GET
def export(request):
    text = selectors.export_text()
    if text is None:
        raise Http404("The results have not been computed yet")
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="geoweb-rounds.csv"'
    return response
