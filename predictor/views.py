"""HTTP views of the predictor app: upload, the live analysis page, the user's analyses, the partition explorer."""
from __future__ import annotations


from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.ratelimit import client_ip, limit_by_ip
from core.redirects import safe_next
from core import images
from predictor import explorer, places, policy, selectors, services


@require_GET
@gzip_page
def basemap(request):
    """Country outlines for the offline basemap under the tile layer, at the detail `?detail=world|fine` asks for.

    A URL that carries the current `?v=` may be kept by the browser for a year; the ETag answers revalidations."""
    level = request.GET.get("detail", "world")
    if level not in places.BASEMAP_LEVELS:
        return JsonResponse({"error": f"detail must be one of {', '.join(places.BASEMAP_LEVELS)}"}, status=404)
    etag = places.basemap_etag(level)
    if etag in request.headers.get("If-None-Match", ""):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(places.basemap_level(level), content_type="application/geo+json")
    response["ETag"] = etag
    versioned = request.GET.get("v") == places.basemap_version()
    response["Cache-Control"] = "public, max-age=31536000, immutable" if versioned else "public, max-age=3600"
    return response


# --- upload ----------------------------------------------------------------------------------------------------

def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _upload_error(request, message: str, status: int, *, retry_after_s: int | None = None):
    if _wants_json(request):
        response = JsonResponse({"error": message}, status=status)
    else:
        response = render(request, "predictor/analyze.html", _upload_context(request, error=message), status=status)
    if retry_after_s:
        response["Retry-After"] = str(retry_after_s)
    return response


def _upload_context(request, **extra) -> dict:
    return {"max_mb": f"{settings.UPLOAD_MAX_BYTES / 2**20:.3g}", "max_mp": settings.UPLOAD_MAX_PIXELS // 1_000_000,
            "uploads_enabled": policy.uploads_enabled(), "formats": images.FORMAT_NAMES,
            "terms_accepted": policy.has_accepted_terms(request.user), "granularity": settings.UPLOAD_GRANULARITY,
            **extra}


TERMS_NEEDED = "Please read and accept the terms of use before you upload a photo."


@require_http_methods(["GET", "POST"])
def terms(request):
    """The terms of use; a logged-in user accepts them with the checkbox (stored with a timestamp)."""
    accepted = policy.has_accepted_terms(request.user)
    error = None
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect(f"{reverse('login')}?next={reverse('terms')}")
        if request.POST.get("accept") == "yes":
            policy.accept_terms(request.user)
            return redirect(safe_next(request, request.POST.get("next"), default="analyze"))
        error = "Please tick the box to accept the terms."
    return render(request, "predictor/terms.html", {
        "accepted": accepted, "error": error, "next": request.GET.get("next", ""),
        "granularity": settings.UPLOAD_GRANULARITY, "abuse_email": settings.ABUSE_REPORT_EMAIL,
    }, status=400 if error else 200)


@login_required
@limit_by_ip("upload")
@require_http_methods(["GET", "POST"])
def analyze(request):
    """The upload form; a POST validates the photo, queues the analysis and goes to its live page."""
    if request.method == "GET":
        return render(request, "predictor/analyze.html", _upload_context(request))
    if not policy.has_accepted_terms(request.user):
        return _upload_error(request, TERMS_NEEDED, 403)
    limit = settings.UPLOAD_MAX_BYTES
    # Refuse an oversized body from its declared length, before Django reads (and spools) any of it.
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + 64 * 1024:
        return _upload_error(request, f"The file is larger than the {limit / 2**20:.3g} MB limit.", 413)
    upload = request.FILES.get("photo")
    if upload is None:
        return _upload_error(request, "Please choose a photo to analyse.", 400)
    if upload.size > limit:
        return _upload_error(request, f"The file is larger than the {limit / 2**20:.3g} MB limit.", 413)
    try:
        analysis = services.create_analysis(owner=request.user, data=upload.read(),
                                            keep_photo=request.POST.get("keep_photo") in ("on", "yes", "1"),
                                            client_ip=_ip_or_none(request))
    except (images.RejectedImage, services.UploadRefused) as refusal:
        return _upload_error(request, refusal.message, refusal.status,
                             retry_after_s=getattr(refusal, "retry_after_s", None))
    url = reverse("analysis", args=[analysis.pk])
    if _wants_json(request):
        return JsonResponse({"id": analysis.pk, "url": url}, status=201)
    return redirect(url)


def _ip_or_none(request) -> str | None:
    import ipaddress

    try:
        return str(ipaddress.ip_address(client_ip(request)))
    except ValueError:
        return None


def _own_analysis(request, analysis_id: int):
    analysis = selectors.analysis_of(user=request.user, analysis_id=analysis_id)
    if analysis is None:
        raise Http404("No such analysis.")
    return analysis


@login_required
@require_GET
def analysis_page(request, analysis_id: int):
    analysis = _own_analysis(request, analysis_id)
    return render(request, "predictor/analysis.html", {
        "analysis": analysis,
        "socket_path": f"/ws/analysis/{analysis.pk}/",
        "abuse_email": settings.ABUSE_REPORT_EMAIL,
    })


def _private_file(field, content_type: str):
    return _private_name(field.name if field else "", content_type)


def _private_name(name: str, content_type: str):
    if not name or not default_storage.exists(name):
        raise Http404("No such file.")
    response = FileResponse(default_storage.open(name, "rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_GET
def analysis_photo(request, analysis_id: int):
    return _private_file(_own_analysis(request, analysis_id).image, "image/jpeg")


@login_required
@require_GET
def analysis_thumbnail(request, analysis_id: int):
    return _private_file(_own_analysis(request, analysis_id).thumbnail, "image/jpeg")


@login_required
@require_GET
def analysis_cam(request, analysis_id: int):
    return _private_file(_own_analysis(request, analysis_id).cam, "image/png")


@login_required
@require_GET
def analysis_cell_cam(request, analysis_id: int, index: int):
    """The activation map of one clicked cell: the `index`-th stored by the analysis (see services._cam_event)."""
    names = services.cell_cam_files(_own_analysis(request, analysis_id))
    if index >= len(names):
        raise Http404("No activation map for this cell.")
    return _private_name(names[index], "image/png")


@login_required
@require_GET
def my_analyses(request):
    return render(request, "predictor/my_analyses.html", {"analyses": selectors.analyses_of(user=request.user)})


@login_required
@require_POST
def delete_analysis(request, analysis_id: int):
    services.delete_analysis(analysis=_own_analysis(request, analysis_id))
    if _wants_json(request):
        return JsonResponse({"deleted": analysis_id})
    return redirect("my-analyses")


@login_required
@require_POST
def delete_all_analyses(request):
    count = services.delete_all_analyses(owner=request.user)
    if _wants_json(request):
        return JsonResponse({"deleted": count})
    return redirect("my-analyses")


@login_required
@require_http_methods(["GET", "POST"])
def delete_account(request):
    """Delete the account with every upload, after the password is given again."""
    error = None
    if request.method == "POST":
        if request.user.check_password(request.POST.get("password", "")):
            from django.contrib.auth import logout

            user = request.user
            logout(request)
            services.delete_account(user=user)
            return redirect("home")
        error = "The password is not right."
    count = selectors.analyses_of(user=request.user).count()
    return render(request, "registration/delete_account.html", {"error": error, "count": count},
                  status=400 if error else 200)


# --- explorers -------------------------------------------------------------------------------------------------

@require_GET
def partition_explorer(request):
    try:
        names = explorer.partitioning_names()
        error = None
    except explorer.NoPartitionings as missing:
        names, error = [], str(missing)
    return render(request, "predictor/partitions.html", {"names": names, "error": error})


@require_GET
@gzip_page
def partition_cells(request, name: str):
    try:
        data = explorer.partitioning_geojson(name=name)
    except explorer.NoPartitionings as missing:
        return JsonResponse({"error": str(missing)}, status=404)
    except KeyError:
        return JsonResponse({"error": f"No partitioning named {name!r} in the active model."}, status=404)
    response = HttpResponse(data, content_type="application/geo+json")
    response["Cache-Control"] = "private, max-age=300"
    return response
