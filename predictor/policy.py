"""Responsible-use rules of the upload path: the terms of use, the kill switch, and how precise an upload's
answer may be. See docs/responsible-use.md."""
from __future__ import annotations

from django.conf import settings

from predictor.models import SiteSettings, TermsAcceptance

COUNTRY, REGION, FINE = "country", "region", "fine"
# No location at all: the answer to a photo the model judges not localizable where GEOWEB_UPLOAD_NON_LOCALIZABLE is
# "withhold". Never a configured level (GEOWEB_UPLOAD_GRANULARITY), only one a photo can be limited to.
WITHHELD = "withheld"
# From coarsest to finest; an upload's answer is limited to one of these.
LEVELS = (WITHHELD, COUNTRY, REGION, FINE)
REASON_INDOOR = "the scene looks like an indoor scene"
REASON_FACES = "faces were detected in the photo"
REASON_FACE_CHECK_FAILED = "the face check could not be run on this photo"


def uploads_enabled() -> bool:
    """Uploads are on only while both the setting and the admin toggle (Site settings) allow them."""
    return bool(settings.UPLOADS_ENABLED) and not SiteSettings.load().uploads_paused


def has_accepted_terms(user) -> bool:
    if not user.is_authenticated:
        return False
    return TermsAcceptance.objects.filter(user=user, version=settings.TERMS_VERSION).exists()


def accept_terms(user) -> TermsAcceptance:
    acceptance, _ = TermsAcceptance.objects.update_or_create(user=user, defaults={"version": settings.TERMS_VERSION})
    return acceptance


def level_for(owner) -> str:
    """The configured level for this user's uploads: staff may get "fine" where the setting allows it."""
    if getattr(owner, "is_staff", False) and settings.UPLOAD_STAFF_FINE:
        return FINE
    return settings.UPLOAD_GRANULARITY


def coarser(a: str, b: str) -> str:
    return a if LEVELS.index(a) <= LEVELS.index(b) else b


def non_localizable(*, refined) -> tuple[str | None, str]:
    """(the level a photo the model itself judges not localizable is limited to, why) or (None, "") when it is
    localizable, the model does not judge, or GEOWEB_UPLOAD_NON_LOCALIZABLE says "answer"."""
    if refined is None or refined.localizable or settings.UPLOAD_NON_LOCALIZABLE == "answer":
        return None, ""
    limit = WITHHELD if settings.UPLOAD_NON_LOCALIZABLE == "withhold" else settings.UPLOAD_NON_LOCALIZABLE
    return limit, (f"the model judges this photo not localizable (its neighbours agree too little: prediction "
                   f"density {100 * refined.score:.0f}%)")


def limit_sentence(level: str, reasons: list[str]) -> str:
    """What the page says about an answer made coarser than configured ("" when it was not)."""
    if not reasons:
        return ""
    why = " and ".join(reasons)
    if level == WITHHELD:
        return f"No location is given because {why}."
    return f"Shown at {level} level because {why}."


def sensitive_reasons(*, concept: str, faces: int | None) -> list[str]:
    """Why a photo's answer must be coarsened to country level; `faces` None means the detector failed."""
    reasons = []
    if settings.UPLOAD_COARSEN_INDOOR and concept == "indoor":
        reasons.append(REASON_INDOOR)
    if settings.UPLOAD_FACE_DETECTION:
        if faces is None:
            reasons.append(REASON_FACE_CHECK_FAILED)
        elif faces > 0:
            reasons.append(REASON_FACES)
    return reasons
