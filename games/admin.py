"""Curation of play mode in the Django admin: game images with the models' and players' errors, their licences and
links, imports with a preview, recompute jobs, difficulty, and the players' reports. Every change is logged."""
from __future__ import annotations

import functools
import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import models
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from games import admin_import, curation, recompute, selectors
from games import licences
from games.models import Game, GameImage, GameOpponent, ImageReport, LinkStatus, ModelGuess, RecomputeJob, Round
from predictor import registry

ERROR_BANDS = [  # the distance thresholds the Im2GPS papers report accuracy at
    ("street", "street (< 1 km)", 0, 1), ("city", "city (1–25 km)", 1, 25),
    ("region", "region (25–200 km)", 25, 200), ("country", "country (200–750 km)", 200, 750),
    ("continent", "continent (750–2500 km)", 750, 2500), ("beyond", "beyond (≥ 2500 km)", 2500, None),
]
MAP_W, MAP_H = 240, 120


# --- filters ----------------------------------------------------------------------------------------------------

class LicenceClassFilter(admin.SimpleListFilter):
    title = "licence"
    parameter_name = "licence"

    def lookups(self, request, model_admin):
        return list(licences.KIND_LABELS.items())

    def queryset(self, request, queryset):
        if self.value() in licences.KINDS:
            return queryset.filter(licence_kind=self.value())
        return queryset


class SceneFilter(admin.SimpleListFilter):
    title = "scene (most likely S3 concept)"
    parameter_name = "scene"

    def lookups(self, request, model_admin):
        return [("indoor", "indoor"), ("natural", "natural"), ("urban", "urban"), ("none", "no scene")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(scene="")
        if self.value():
            return queryset.filter(scene=self.value())
        return queryset


class ModelErrorFilter(admin.SimpleListFilter):
    title = "reference model's error"
    parameter_name = "model_error"

    def lookups(self, request, model_admin):
        return [(key, label) for key, label, _low, _high in ERROR_BANDS] + [("none", "no guess")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(model_error_km__isnull=True)
        for key, _label, low, high in ERROR_BANDS:
            if self.value() == key:
                queryset = queryset.filter(model_error_km__gte=low)
                return queryset.filter(model_error_km__lt=high) if high is not None else queryset
        return queryset


class NeverPlayedFilter(admin.SimpleListFilter):
    title = "played"
    parameter_name = "played"

    def lookups(self, request, model_admin):
        return [("never", "never played"), ("played", "played")]

    def queryset(self, request, queryset):
        if self.value() == "never":
            return queryset.filter(rounds_played=0)
        if self.value() == "played":
            return queryset.filter(rounds_played__gt=0)
        return queryset


# --- pieces of HTML ----------------------------------------------------------------------------------------------

@functools.cache
def _world_path() -> str:
    """The basemap's country outlines as one SVG path in MAP_W x MAP_H (empty when the basemap is unavailable)."""
    try:
        from predictor.places import basemap_geojson

        features = json.loads(basemap_geojson(0.5))["features"]
    except Exception:  # noqa: BLE001 - the small map then shows the graticule only
        return ""
    parts = []
    for feature in features:
        geometry = feature["geometry"]
        polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
        for polygon in polygons:
            ring = polygon[0] if polygon else []
            if len(ring) < 4:
                continue
            points = " ".join(f"{(lon + 180) * MAP_W / 360:.1f},{(90 - lat) * MAP_H / 180:.1f}" for lon, lat in ring)
            parts.append(f"M{points}Z")
    return "".join(parts)


def _xy(lat: float, lon: float) -> tuple[float, float]:
    return round((lon + 180) * MAP_W / 360, 1), round((90 - lat) * MAP_H / 180, 1)


def location_map(image: GameImage, guesses: list[ModelGuess]) -> str:
    """A small equirectangular SVG world map: the true location (green) and the models' guesses (red)."""
    x, y = _xy(image.lat, image.lon)
    marks = format_html_join("", '<circle cx="{}" cy="{}" r="3" fill="#c62828"><title>{}</title></circle>',
                             ((*_xy(g.lat, g.lon), g.model_name) for g in guesses))
    osm = "https://www.openstreetmap.org/?" + urlencode({"mlat": f"{image.lat:.5f}", "mlon": f"{image.lon:.5f}"})
    return format_html(
        '<svg class="geoweb-map" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="True location {lat}, {lon}"><rect width="{w}" height="{h}" fill="#dbeafe"/>'
        '<path d="{world}" fill="#f1f5f9" stroke="#94a3b8" stroke-width="0.4"/>{marks}'
        '<rect x="{rx}" y="{ry}" width="7" height="7" fill="#1a7f37" stroke="#111"><title>true location</title></rect>'
        '</svg><br><a href="{osm}" target="_blank" rel="noopener">{lat}, {lon}</a> (OpenStreetMap)',
        w=MAP_W, h=MAP_H, lat=f"{image.lat:.5f}", lon=f"{image.lon:.5f}", world=_world_path(), marks=marks,
        rx=x - 3.5, ry=y - 3.5, osm=osm)


S3_COLOURS = {"indoor": "#8b5cf6", "natural": "#16a34a", "urban": "#64748b"}


def scene_bars(image: GameImage) -> str:
    """The S3 probabilities as bars; drawn in SVG (attributes, not inline styles, which the CSP forbids)."""
    rows = [(name, p) for name, p in (("indoor", image.p_indoor), ("natural", image.p_natural),
                                      ("urban", image.p_urban)) if p is not None]
    if not rows:
        return "—"
    return format_html('<div class="s3-bars">{}</div>', format_html_join(
        "", '<div class="s3-bar" title="{0}: {1}%"><span class="s3-label">{0}</span>'
            '<svg width="100" height="8" aria-hidden="true"><rect width="100" height="8" fill="#e5e7eb"/>'
            '<rect class="s3-{0}" width="{1}" height="8" fill="{2}"/></svg>'
            '<span class="s3-value">{1}%</span></div>',
        ((name, round(100 * p), S3_COLOURS[name]) for name, p in rows)))


def _km(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} km" if value >= 10 else f"{value:.1f} km"


# --- forms ------------------------------------------------------------------------------------------------------

class ActivationReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=1000, required=True,
                             label="Why may these images be shown although their licence is not open?")


def _formfield(field, **kwargs):
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class GameImageForm(forms.ModelForm):
    class Meta:
        model = GameImage
        fields = "__all__"
        formfield_callback = _formfield

    def clean(self):
        data = super().clean()
        # Switching an image on is what needs the reason; a licence edit on an active image makes it unplayable
        # (games.selectors.playable_images) until a reason is given.
        kind = licences.licence_kind(data.get("licence_name"))
        if data.get("active") and "active" in self.changed_data \
                and licences.needs_reason(kind, commercial=settings.GAME_COMMERCIAL) \
                and not (data.get("activation_reason") or "").strip():
            self.add_error("activation_reason", f"This licence ({licences.KIND_LABELS[kind]}) needs a reason: say "
                                                "why the image may be shown, or leave it inactive.")
        return data


# --- game images --------------------------------------------------------------------------------------------------

class ModelGuessInline(admin.TabularInline):
    model = ModelGuess
    extra = 0
    fields = ["model_name", "lat", "lon", "distance_km"]


@admin.register(GameImage)
class GameImageAdmin(admin.ModelAdmin):
    form = GameImageForm
    list_display = ["thumbnail", "id", "source_id", "author", "licence", "active", "publishable", "scene_column",
                    "model_error",
                    "rounds_column", "player_error", "beat_share", "difficulty", "link_status"]
    list_display_links = ["id", "source_id"]
    list_filter = ["active", LicenceClassFilter, SceneFilter, ModelErrorFilter, "link_status", NeverPlayedFilter,
                   "difficulty"]
    search_fields = ["source_id", "author"]
    list_per_page = 50
    # The photo file is read-only here: photos enter through the imports, which pass them through the image door.
    readonly_fields = ["photo", "image", "pack", "location", "licence", "source_link", "scene", "guesses",
                       "player_stats",
                       "is_open_licence", "licence_kind", "link_status", "link_checked_at", "link_check_detail", "difficulty",
                       "difficulty_km", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["photo", "source_id", "image", "active", "activation_reason"]}),
        ("Location", {"fields": ["location", "lat", "lon"]}),
        ("Attribution", {"fields": ["author", "title", "date_taken", "licence", "licence_name", "licence_url",
                                    "is_open_licence", "licence_kind", "pack",
                                    "source_link", "source_url", "link_status", "link_checked_at",
                                    "link_check_detail"]}),
        ("Scene", {"fields": ["scene", "p_indoor", "p_natural", "p_urban"]}),
        ("How models and players fared", {"fields": ["guesses", "player_stats", "difficulty", "difficulty_km"]}),
        ("Dates", {"fields": ["created_at", "updated_at"]}),
    ]
    inlines = [ModelGuessInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = ["activate", "deactivate", "recompute_guesses", "check_source_links", "delete_selected"]
    change_list_template = "admin/games/gameimage/change_list.html"

    # --- queries --------------------------------------------------------------------------------------------

    def get_queryset(self, request):
        request._reference_model = getattr(request, "_reference_model", None) or selectors.reference_model()
        return selectors.with_curation_stats(super().get_queryset(request), model_name=request._reference_model)

    def get_search_results(self, request, queryset, search_term):
        """Source id and author as usual; a number also finds the image with that id, "#12" finds only it."""
        term = search_term.strip()
        if term.startswith("#") and term[1:].isdigit():
            return queryset.filter(pk=int(term[1:])), False
        found, duplicates = super().get_search_results(request, queryset, search_term)
        if term.isdigit():
            found |= queryset.filter(pk=int(term))
        return found, duplicates

    def save_model(self, request, obj, form, change):
        for name, value in licences.licence_fields(obj.licence_name).items():
            setattr(obj, name, value)
        super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        curation.delete_images(images=[obj])

    def delete_queryset(self, request, queryset):
        curation.delete_images(images=list(queryset))

    # --- columns --------------------------------------------------------------------------------------------

    @admin.display(description="photo")
    def thumbnail(self, obj):
        if not obj.image:
            return "no file"
        url = reverse("admin:games_gameimage_photo", args=[obj.pk])
        return format_html('<img src="{}" alt="" loading="lazy" class="geoweb-thumb" width="64">', url)

    @admin.display(description="photo")
    def photo(self, obj):
        if not obj.pk or not obj.image:
            return "no file"
        url = reverse("admin:games_gameimage_photo", args=[obj.pk])
        return format_html('<a href="{0}"><img src="{0}" alt="{1}" class="geoweb-photo"></a>', url, obj.source_id)

    @admin.display(description="true location")
    def location(self, obj):
        return location_map(obj, list(obj.model_guesses.all())) if obj.pk else "—"

    @admin.display(description="licence", ordering="licence_name")
    def licence(self, obj):
        name = obj.licence_name or "unknown"
        marker = " ⚠" if licences.needs_reason(obj.licence_kind, commercial=settings.GAME_COMMERCIAL) else ""
        if obj.licence_url.startswith(("http://", "https://")):
            return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>{}', obj.licence_url, name, marker)
        return format_html("{}{}", name, marker)

    @admin.display(description="licence allows play", boolean=True)
    def publishable(self, obj):
        # Open licence, or published with a recorded reason: what games.selectors.playable_images asks besides
        # the active flag, the stored file and the opponent's guess.
        return not licences.needs_reason(obj.licence_kind, commercial=settings.GAME_COMMERCIAL) \
            or bool(obj.activation_reason)

    @admin.display(description="source")
    def source_link(self, obj):
        if not obj.source_url.startswith(("http://", "https://")):
            return "—"
        return format_html('<a href="{0}" target="_blank" rel="noopener">{0}</a>', obj.source_url)

    @admin.display(description="scene (S3)")
    def scene(self, obj):
        return scene_bars(obj)

    @admin.display(description="scene", ordering="scene")
    def scene_column(self, obj):
        return scene_bars(obj) if obj.scene else "—"

    @admin.display(description="model error", ordering="model_error_km")
    def model_error(self, obj):
        return _km(obj.model_error_km)

    @admin.display(description="rounds", ordering="rounds_played")
    def rounds_column(self, obj):
        return obj.rounds_played

    @admin.display(description="player error (mean)", ordering="mean_player_km")
    def player_error(self, obj):
        return _km(obj.mean_player_km)

    @admin.display(description="players beating the model")
    def beat_share(self, obj):
        return f"{obj.beat_model / obj.rounds_played:.0%}" if obj.rounds_played else "—"

    @admin.display(description="stored guesses of each model")
    def guesses(self, obj):
        rows = list(obj.model_guesses.order_by("model_name")) if obj.pk else []
        if not rows:
            return "no model has guessed this image"
        return format_html(
            '<table class="geoweb-guesses"><thead><tr><th>model</th><th>guess</th><th>error</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}, {}</td><td>{}</td></tr>",
                             ((g.model_name, f"{g.lat:.4f}", f"{g.lon:.4f}", _km(g.distance_km)) for g in rows)))

    @admin.display(description="players")
    def player_stats(self, obj):
        if not obj.pk or not obj.rounds_played:
            return "never played"
        return format_html("{} round(s) played · mean player error {} · {} of players beat the model they played",
                           obj.rounds_played, _km(obj.mean_player_km), self.beat_share(obj))

    # --- extra pages ----------------------------------------------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/photo/", wrap(self.photo_view), name="games_gameimage_photo"),
            path("import/", wrap(self.import_view), name="games_gameimage_import"),
        ] + super().get_urls()

    def photo_view(self, request, pk):
        if not self.has_view_permission(request):
            raise Http404
        image = GameImage.objects.filter(pk=pk).first()
        if image is None or not image.image:
            raise Http404("no photo")
        try:
            handle = image.image.open("rb")
        except (FileNotFoundError, OSError, ValueError):
            return HttpResponse("The photo file is missing on the server.", status=404, content_type="text/plain")
        ext = image.image.name.rsplit(".", 1)[-1].lower()
        return FileResponse(handle, content_type={"png": "image/png", "webp": "image/webp"}.get(ext, "image/jpeg"))

    def import_view(self, request):
        if not self.has_add_permission(request) or not self.has_change_permission(request):
            raise Http404
        return admin_import.import_view(self, request)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "reference_model": selectors.reference_model(),
                         "jobs_url": reverse("admin:games_recomputejob_changelist"),
                         "import_url": reverse("admin:games_gameimage_import")}
        return super().changelist_view(request, extra_context)

    # --- actions --------------------------------------------------------------------------------------------

    @admin.action(description="Make playable (active); a licence that is not open needs a reason")
    def activate(self, request, queryset):
        images = list(queryset)
        needs_reason = [i for i in images if licences.needs_reason(i.licence_kind, commercial=settings.GAME_COMMERCIAL)
                        and not i.activation_reason]
        reason = ""
        if needs_reason:
            form = ActivationReasonForm(request.POST if "apply_reason" in request.POST else None)
            if not form.is_bound or not form.is_valid():
                if form.is_bound:
                    self.message_user(request, "Not activated: give a reason, or cancel.", messages.ERROR)
                return TemplateResponse(request, "admin/games/gameimage/activate_reason.html", {
                    **self.admin_site.each_context(request), "title": "Activate images whose licence is not open",
                    "opts": self.model._meta, "form": form, "images": images, "needs_reason": needs_reason,
                    "select_across": request.POST.get("select_across") == "1",
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME})
            reason = form.cleaned_data["reason"]
        result = curation.activate(images=images, reason=reason)
        for image in result.activated:
            message = "Activated"
            if licences.needs_reason(image.licence_kind, commercial=settings.GAME_COMMERCIAL):
                message += f" although the licence needs a reason ({image.licence_name or 'unknown'}); reason: " \
                           f"{image.activation_reason}"
            self.log_change(request, image, message)
        self.message_user(request, f"{len(result.activated)} image(s) activated.")

    @admin.action(description="Withdraw from play (inactive)")
    def deactivate(self, request, queryset):
        changed = curation.deactivate(images=list(queryset))
        for image in changed:
            self.log_change(request, image, "Deactivated (withdrawn from play)")
        self.message_user(request, f"{len(changed)} image(s) withdrawn.")

    def get_actions(self, request):
        """The usual actions, plus "Recompute <name>'s guesses" for each installed model other than the active one
        (e.g. geoclip, so it can be a game opponent without becoming the upload predictor)."""
        actions = super().get_actions(request)
        if "recompute_guesses" not in actions:
            return actions
        for bundle in registry.installed_bundles():
            if bundle.active:
                continue
            name = f"recompute_guesses_of_{bundle.name}"
            actions[name] = (self._recompute_action(bundle.name), name,
                             f"Recompute {bundle.name}'s guesses (background job)")
        return actions

    @staticmethod
    def _recompute_action(model_name: str):
        def action(modeladmin, request, queryset):
            return modeladmin.recompute_guesses(request, queryset, model_name=model_name)
        return action

    @admin.action(description="Recompute the active model's guesses (background job)")
    def recompute_guesses(self, request, queryset, model_name: str | None = None):
        images = list(queryset)
        try:
            job = recompute.start_recompute(images=images, user=request.user, model_name=model_name)
        except curation.CurationError as error:
            self.message_user(request, str(error), messages.ERROR)
            return None
        for image in images:
            self.log_change(request, image, f"Queued recompute job #{job.pk} of {job.model_name}'s guess")
        self.message_user(request, f"Recompute job #{job.pk} started for {job.total} image(s).")
        return redirect("admin:games_recomputejob_change", job.pk)

    @admin.action(description="Check that the source links are alive")
    def check_source_links(self, request, queryset):
        images = list(queryset[:curation.LINK_CHECK_MAX + 1])
        if len(images) > curation.LINK_CHECK_MAX:
            self.message_user(request, f"Select at most {curation.LINK_CHECK_MAX} images per link check (the "
                                       "check runs while the page waits).", messages.ERROR)
            return
        checked = curation.check_links(images=images)
        for image in checked:
            self.log_change(request, image, f"Source link checked: {image.link_status} ({image.link_check_detail})")
        dead = sum(1 for image in checked if image.link_status == LinkStatus.DEAD)
        self.message_user(request, f"{len(checked)} link(s) checked: {len(checked) - dead} alive, {dead} dead.",
                          messages.WARNING if dead else messages.SUCCESS)


# --- recompute jobs -------------------------------------------------------------------------------------------------

@admin.register(RecomputeJob)
class RecomputeJobAdmin(admin.ModelAdmin):
    list_display = ["id", "model_name", "status", "progress", "failed", "created_by", "created_at", "finished_at"]
    list_filter = ["status", "model_name"]
    readonly_fields = ["status", "model_name", "progress", "total", "done", "failed", "error_list", "message",
                       "created_by", "created_at", "started_at", "finished_at"]
    exclude = ["image_ids", "errors"]
    change_form_template = "admin/games/recomputejob/change_form.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress(self, obj):
        return format_html('<progress max="{}" value="{}" class="geoweb-progress"></progress> '
                           '<span class="geoweb-progress-text">{} / {}</span>', obj.total, obj.done, obj.done,
                           obj.total)

    @admin.display(description="images that failed")
    def error_list(self, obj):
        if not obj.errors:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}: {}</li>", obj.errors))


# --- player reports ------------------------------------------------------------------------------------------------

@admin.register(ImageReport)
class ImageReportAdmin(admin.ModelAdmin):
    list_display = ["id", "image_link", "reason", "comment", "reporter", "created_at", "resolved", "resolved_by"]
    list_filter = ["resolved", "reason"]
    search_fields = ["image__source_id", "comment"]
    readonly_fields = ["image", "round", "reason", "comment", "reporter", "created_at", "resolved", "resolved_by",
                       "resolved_at"]
    fields = readonly_fields + ["resolution"]
    actions = ["resolve", "resolve_and_deactivate"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="image", ordering="image__source_id")
    def image_link(self, obj):
        url = reverse("admin:games_gameimage_change", args=[obj.image_id])
        return format_html('<a href="{}">#{} {}</a>', url, obj.image_id, obj.image.source_id)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("image", "reporter", "resolved_by")

    @admin.action(description="Mark resolved (the image stays as it is)")
    def resolve(self, request, queryset):
        done = curation.resolve_reports(reports=list(queryset), user=request.user, resolution="kept")
        for report in done:
            self.log_change(request, report, "Resolved: image kept")
        self.message_user(request, f"{len(done)} report(s) resolved.")

    @admin.action(description="Withdraw the reported images and mark resolved")
    def resolve_and_deactivate(self, request, queryset):
        reports = list(queryset)
        withdrawn = curation.deactivate(images=list(GameImage.objects.filter(pk__in=[r.image_id for r in reports])))
        image_admin = self.admin_site._registry[GameImage]
        for image in withdrawn:
            image_admin.log_change(request, image, "Deactivated after a player report")
        done = curation.resolve_reports(reports=reports, user=request.user, resolution="image withdrawn")
        for report in done:
            self.log_change(request, report, "Resolved: image withdrawn")
        self.message_user(request, f"{len(done)} report(s) resolved, {len(withdrawn)} image(s) withdrawn.")


# --- games ----------------------------------------------------------------------------------------------------------

class OpponentInline(admin.TabularInline):
    model = GameOpponent
    extra = 0
    can_delete = False
    fields = ["position", "model_name"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class RoundInline(admin.TabularInline):
    model = Round
    extra = 0
    can_delete = False
    fields = ["index", "image", "distance_km", "score", "ai_answers", "started_at", "guessed_at"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("answers__opponent")

    @admin.display(description="AIs: error · score")
    def ai_answers(self, round_: Round) -> str:
        return "; ".join(f"{a.opponent.model_name}: {a.distance_km:.1f} km · {a.score}"
                         for a in sorted(round_.answers.all(), key=lambda a: a.opponent.position)) or "–"


@admin.register(Game)
class GameAdmin(admin.ModelAdmin):
    list_display = ["key", "player_name", "mode", "difficulty", "opponent_names", "created_at", "finished_at"]
    list_filter = ["mode", "difficulty", "opponent_rows__model_name"]
    search_fields = ["nickname", "user__username"]
    readonly_fields = ["key", "challenge_token", "user", "session_key", "seed", "mode", "difficulty", "challenge_of",
                       "created_at", "finished_at"]
    inlines = [OpponentInline, RoundInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("opponent_rows")

    @admin.display(description="AI opponents")
    def opponent_names(self, game: Game) -> str:
        return ", ".join(game.opponents)
