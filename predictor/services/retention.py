"""The stored files of an analysis: how they are named, which they are, and when they go (retention, deletion).

The services here are the only way analyses are deleted: each deletes the rows and then their files. There is no
`post_delete` signal; a path that deleted rows by other means would leave their files behind.
"""
from __future__ import annotations

import uuid

from django.core.files.storage import default_storage

from predictor.models import Analysis


def new_file_name(kind: str, extension: str) -> str:
    return f"analyses/{kind}/{uuid.uuid4().hex}.{extension}"


def delete_analysis(*, analysis: Analysis) -> None:
    """Delete the row and every file of it: the photo, the thumbnail and the activation maps."""
    names = analysis_files(analysis)
    Analysis.objects.filter(pk=analysis.pk).delete()
    for name in names:
        default_storage.delete(name)


def delete_all_analyses(*, owner) -> int:
    """Delete every analysis of `owner` with all its files; returns how many there were."""
    count = 0
    for analysis in list(Analysis.objects.filter(owner=owner)):
        delete_analysis(analysis=analysis)
        count += 1
    return count


def delete_account(*, user) -> None:
    """Delete the user's uploads (rows and files) and then the account. Audit rows stay, without the account."""
    delete_all_analyses(owner=user)
    user.delete()


def analysis_files(analysis: Analysis) -> list[str]:
    """Every stored file of an analysis: photo, thumbnail, activation map, segmentation overlay and the per-cell
    activation maps."""
    own = [f.name for f in (analysis.image, analysis.thumbnail, analysis.cam) if f]
    own += [name] if (name := segmentation_file(analysis)) else []
    return own + list(dict.fromkeys(cell_cam_files(analysis)))  # a fine and a hierarchy cell may share a file


def segmentation_file(analysis: Analysis) -> str | None:
    """The storage name of the segmentation overlay of an analysis by a bundle with a segmentation network."""
    return (analysis.result or {}).get("segmentation_file") or None


def cell_cam_files(analysis: Analysis) -> list[str]:
    """Storage names of the per-cell activation maps, in the order of their URLs (/analyze/<id>/cam/<n>.png)."""
    return [entry["file"] for entry in (analysis.result or {}).get("cell_cams", []) if entry.get("file")]


def discard_photo(analysis: Analysis) -> None:
    """Retention: once an analysis ends, its photo and thumbnail go unless the owner asked to keep them."""
    if analysis.keep_photo:
        return
    names = [f.name for f in (analysis.image, analysis.thumbnail) if f]
    if not names:
        return
    Analysis.objects.filter(pk=analysis.pk).update(image="", thumbnail="")
    analysis.image, analysis.thumbnail = "", ""
    for name in names:
        default_storage.delete(name)
