"""The admin's import page: upload Im2GPS files, preview what the import would do, then apply it.

Uploads are kept in a staging folder named by a random token held in the staff member's session, so that the
apply step imports exactly the files that were previewed. Both steps run games.importing.import_im2gps, the
service behind `manage.py import_im2gps`: the preview as a dry run, the apply as a strict run (all or nothing).
"""
from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from pathlib import Path

from django import forms
from django.contrib import messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from games import importing
from games.difficulty import recompute_difficulty
from games.models import GameImage

SESSION_KEY = "games_import_staging"
STAGING_MAX_AGE_S = 24 * 3600


class ImportForm(forms.Form):
    meta = forms.FileField(required=False, label="Metadata CSV (Im2GPS format: IMG_ID, AUTHOR, LAT, LON, ..., "
                                                 "Prob_indoor, Prob_natural, Prob_urban), optional: without it "
                                                 "the photos' own JPEG comments give the truth")
    images = forms.FileField(required=False, label="Zip of the photos, named by IMG_ID (optional for rows that "
                                                   "already have a photo)")

    def clean(self):
        data = super().clean()
        if not data.get("meta") and not data.get("images"):
            raise forms.ValidationError("Give the zip of photos, the metadata CSV, or both.")
        return data
    attribution = forms.FileField(required=False, label="Attribution CSV (scene_M_p_im2gps.csv: img_id, url, "
                                                        "author, license_name, license_url), optional")
    predictions = forms.FileField(required=False, label="Model guesses in the published results format (img_id, "
                                                        "predicted_lat, predicted_long, ...), optional")
    model_name = forms.CharField(required=False, max_length=100,
                                 help_text="Name of the model the guesses belong to; by default the paper's name "
                                           "for a published file name (ISNs_M-fstar-S3.csv → ISNs(M, f*, S3)).")


def staging_root() -> Path:
    return Path(tempfile.gettempdir()) / "geoweb-import-staging"


def _clear_old_staging() -> None:
    root = staging_root()
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.is_dir() and time.time() - folder.stat().st_mtime > STAGING_MAX_AGE_S:
            shutil.rmtree(folder, ignore_errors=True)


def _stage(form: ImportForm) -> dict:
    """Write the uploads into a fresh staging folder; returns what the session keeps about them."""
    _clear_old_staging()
    token = secrets.token_hex(16)
    folder = staging_root() / token
    folder.mkdir(parents=True)
    entry = {"token": token, "names": {}}
    for field in ("meta", "images", "attribution", "predictions"):
        upload = form.cleaned_data.get(field)
        if not upload:
            continue
        target = folder / f"{field}.{'zip' if field == 'images' else 'csv'}"
        with target.open("wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        entry["names"][field] = Path(upload.name).name
    predictions_name = entry["names"].get("predictions")
    entry["model_name"] = (form.cleaned_data.get("model_name") or "").strip() or (
        importing.model_name_for(Path(predictions_name)) if predictions_name else importing.DEFAULT_MODEL_NAME)
    return entry


def _run(entry: dict, *, dry_run: bool) -> importing.ImportReport:
    folder = staging_root() / entry["token"]
    present = {field: folder / f"{field}.{'zip' if field == 'images' else 'csv'}" for field in entry["names"]}
    return importing.import_im2gps(
        meta_path=present.get("meta"), images=present.get("images"), attribution_path=present.get("attribution"),
        predictions_path=present.get("predictions"), model_name=entry["model_name"], dry_run=dry_run, strict=True)


def _discard(request, entry: dict | None) -> None:
    if entry:
        shutil.rmtree(staging_root() / entry["token"], ignore_errors=True)
    request.session.pop(SESSION_KEY, None)


def import_view(model_admin, request):
    context = {**model_admin.admin_site.each_context(request), "opts": GameImage._meta,
               "title": "Import game images", "has_view_permission": True}
    entry = request.session.get(SESSION_KEY)
    if request.method == "POST" and "apply" in request.POST:
        if not entry or request.POST.get("token") != entry["token"] \
                or not (staging_root() / entry["token"]).is_dir():
            model_admin.message_user(request, "This preview has expired: upload the files again.", messages.ERROR)
            return redirect("admin:games_gameimage_import")
        try:
            report = _run(entry, dry_run=False)
        except importing.ImportFailed as error:
            _discard(request, entry)
            model_admin.message_user(request, f"Nothing imported: {error}", messages.ERROR)
            return redirect("admin:games_gameimage_import")
        if report.rolled_back:
            # The data changed since the preview and now some rows are refused: nothing was written.
            context.update(form=ImportForm(), report=report, entry=entry, applied_refused=True)
            return TemplateResponse(request, "admin/games/gameimage/import.html", context)
        _discard(request, entry)
        _log_import(model_admin, request, report, entry)
        recompute_difficulty()
        model_admin.message_user(request, "Imported: " + "; ".join(report.lines()[:1] + _guess_line(report)))
        return redirect("admin:games_gameimage_changelist")
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES)
        if form.is_valid():
            _discard(request, entry)
            entry = _stage(form)
            try:
                report = _run(entry, dry_run=True)
            except importing.ImportFailed as error:
                _discard(request, entry)
                form.add_error(None, f"This file cannot be imported: {error}")
            else:
                request.session[SESSION_KEY] = entry
                context.update(report=report, entry=entry)
        context["form"] = form
    else:
        context["form"] = ImportForm()
    return TemplateResponse(request, "admin/games/gameimage/import.html", context)


def _guess_line(report: importing.ImportReport) -> list[str]:
    if not (report.guesses_created or report.guesses_updated):
        return []
    return [f"model guesses: {report.guesses_created} created, {report.guesses_updated} updated"]


def _log_import(model_admin, request, report: importing.ImportReport, entry: dict) -> None:
    """One admin log entry per created or updated image, naming the uploaded files."""
    files = ", ".join(entry["names"].values())
    outcome = dict(report.outcomes)
    images = GameImage.objects.filter(source_id__in=[img for img, what in outcome.items() if what != "unchanged"])
    for image in images:
        if outcome[image.source_id] == "created":
            model_admin.log_addition(request, image, f"Imported from {files}")
        else:
            model_admin.log_change(request, image, f"Updated by the import of {files}")
