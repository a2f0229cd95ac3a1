"""Write side of curation: publish or withdraw game images, check their source links, delete them, player reports.

The admin is one interface to these functions; each returns what it did so that the caller can tell the staff
member and write the audit log.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from core import images
from games import licences
from games.models import GameImage, ImageReport, LinkStatus, Round

LINK_TIMEOUT_S = 5
LINK_CHECK_THREADS = 8
LINK_CHECK_MAX = 200  # per admin action: at worst 200 / 8 * 2 requests * 5 s, under two minutes


class CurationError(Exception):
    """A curation request that is refused; the message says why and what to do."""


@dataclass
class ActivationResult:
    activated: list[GameImage] = field(default_factory=list)
    refused: list[GameImage] = field(default_factory=list)  # not open and no reason given


def activate(*, images: QuerySet[GameImage] | list[GameImage], reason: str = "") -> ActivationResult:
    """Publish images. One whose licence needs a reason under the policy (games.licences: ND, All Rights Reserved,
    unknown, and NC on a commercial site) is published only with one, which is stored on it."""
    reason = " ".join((reason or "").split())
    result = ActivationResult()
    changed = []
    now = timezone.now()
    for image in images:
        needs = licences.needs_reason(image.licence_kind, commercial=settings.GAME_COMMERCIAL)
        if needs and not reason and not image.activation_reason:
            result.refused.append(image)
            continue
        if not image.active or (needs and reason and image.activation_reason != reason):
            image.active = True
            if needs and reason:
                image.activation_reason = reason
            image.updated_at = now
            changed.append(image)
        result.activated.append(image)
    # One statement per batch, not one per image: the admin and `make_playable` select thousands at once.
    GameImage.objects.bulk_update(changed, ["active", "activation_reason", "updated_at"], batch_size=500)
    return result


def deactivate(*, images: QuerySet[GameImage] | list[GameImage]) -> list[GameImage]:
    """Withdraw images from play; games already drawn keep them, new games no longer draw them."""
    changed = [image for image in images if image.active]
    GameImage.objects.filter(pk__in=[image.pk for image in changed]).update(active=False, updated_at=timezone.now())
    for image in changed:
        image.active = False
    return changed


# --- source links -----------------------------------------------------------------------------------------------

def probe_link(url: str, *, timeout: float = LINK_TIMEOUT_S) -> tuple[str, str]:
    """(status, detail) of a source URL: a HEAD request, and a one-byte GET where the server refuses HEAD."""
    if not url.lower().startswith(("http://", "https://")):
        return LinkStatus.DEAD, "not an http(s) URL" if url else "no source URL"
    for method in ("HEAD", "GET"):
        request = urllib.request.Request(url, method=method, headers={"User-Agent": "GeoWeb link check",
                                                                       "Range": "bytes=0-0"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return LinkStatus.ALIVE, f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            if method == "HEAD" and error.code in (405, 501):
                continue
            return LinkStatus.DEAD, f"HTTP {error.code}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            return LinkStatus.DEAD, f"unreachable: {reason}"[:255]
    return LinkStatus.DEAD, "the server answers neither HEAD nor GET"


def check_links(*, images: list[GameImage], timeout: float = LINK_TIMEOUT_S) -> list[GameImage]:
    """Probe every image's source URL (a few at a time) and record the result and the date on the image."""
    images = list(images)
    with ThreadPoolExecutor(max_workers=LINK_CHECK_THREADS) as pool:
        outcomes = list(pool.map(lambda image: probe_link(image.source_url, timeout=timeout), images))
    now = timezone.now()
    for image, (status, detail) in zip(images, outcomes):
        image.link_status, image.link_check_detail, image.link_checked_at = status, detail, now
    GameImage.objects.bulk_update(images, ["link_status", "link_check_detail", "link_checked_at"])
    return images


# --- deletion ---------------------------------------------------------------------------------------------------

def played_images(images) -> set[int]:
    """Ids of the images some game has drawn: those are kept for the players' history (withdraw them instead)."""
    return set(Round.objects.filter(image__in=images).values_list("image_id", flat=True))


def delete_images(*, images: list[GameImage]) -> int:
    """Delete images and, once the deletion is committed, their photo files (unless another image shares one)."""
    images = list(images)
    played = played_images(images)
    if played:
        names = ", ".join(image.source_id for image in images if image.pk in played)
        raise CurationError(f"played in a game, so kept for the players' history (withdraw them instead): {names}")
    names = {image.image.name for image in images if image.image}
    with transaction.atomic():
        count = GameImage.objects.filter(pk__in=[image.pk for image in images]).delete()[1].get("games.GameImage", 0)
        still_used = set(GameImage.objects.filter(image__in=names).values_list("image", flat=True))
        orphans = names - still_used
        transaction.on_commit(lambda: [default_storage.delete(name) for name in orphans])
    return count


# --- player reports ---------------------------------------------------------------------------------------------

def report_image(*, round_: Round, reason: str, comment: str = "", user=None) -> ImageReport:
    """A player's report on the photo of a round they have guessed; one report per round."""
    if not round_.is_guessed:
        raise CurationError("a photo can be reported once its round is guessed")
    if reason not in ImageReport.Reason.values:
        raise CurationError(f"unknown reason {reason!r}; choose one of {', '.join(ImageReport.Reason.values)}")
    comment = str(comment or "").strip()
    if len(comment) > 1000:
        raise CurationError("a comment has at most 1000 characters")
    if ImageReport.objects.filter(round=round_).exists():
        raise CurationError("this photo has already been reported for this round")
    return ImageReport.objects.create(image_id=round_.image_id, round=round_, reason=reason, comment=comment,
                                      reporter=user if user is not None and user.is_authenticated else None)


def resolve_reports(*, reports: list[ImageReport], user, resolution: str = "") -> list[ImageReport]:
    """Close reports (the staff member and the date are recorded); already resolved ones are left as they were."""
    now = timezone.now()
    open_reports = [report for report in reports if not report.resolved]
    for report in open_reports:
        report.resolved, report.resolved_by, report.resolved_at = True, user, now
        report.resolution = resolution or report.resolution
    ImageReport.objects.bulk_update(open_reports, ["resolved", "resolved_by", "resolved_at", "resolution"])
    return open_reports


# --- cleaning photos stored by earlier versions ------------------------------------------------------------------

@dataclass
class CleanResult:
    checked: int = 0
    cleaned: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def is_clean_photo(name: str, data: bytes) -> bool:
    """Whether a stored game photo is what the image door writes: JPEG or WebP without any metadata block, at most
    GAME_PHOTO_MAX_SIDE pixels, under the content-hash name of its bytes."""
    try:
        clean = images.accept_clean_photo(data)
    except images.RejectedImage:
        return False
    return name == f"game_images/{clean.name}"


def clean_stored_photos(*, dry_run: bool = False) -> CleanResult:
    """Pass every stored game photo that is not clean through the image door; the clean copy replaces it."""
    from games.importing import store_photo

    result = CleanResult()
    names = sorted(set(GameImage.objects.exclude(image="").values_list("image", flat=True)))
    for name in names:
        result.checked += 1
        try:
            with default_storage.open(name, "rb") as handle:
                data = handle.read()
        except OSError as error:
            result.failed.append((name, f"unreadable: {error}"))
            continue
        if is_clean_photo(name, data):
            continue
        try:
            clean = images.clean_game_photo(data)
        except images.RejectedImage as error:
            result.failed.append((name, error.message))
            continue
        result.cleaned += 1
        if dry_run:
            continue
        new_name = store_photo(clean)
        with transaction.atomic():
            GameImage.objects.filter(image=name).update(image=new_name, updated_at=timezone.now())
        if new_name != name:
            default_storage.delete(name)
    return result
