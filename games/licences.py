"""Which photo licences let the game show a photo, and the Flickr licence ids the Im2GPS photos carry.

The policy (docs/play.md, "Licence policy"):
- "open": CC BY, CC BY-SA, CC0, the Public Domain Mark, "No known copyright restrictions" and US Government works
  are playable;
- "nc": non-commercial licences are playable unless the site is commercial (GEOWEB_GAME_COMMERCIAL=1);
- "nd" (no derivatives: the game shows a resized re-encoding), "arr" (All Rights Reserved) and "unknown" need a
  staff member's recorded reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

OPEN, NON_COMMERCIAL, NO_DERIVATIVES, ALL_RIGHTS_RESERVED, UNKNOWN = "open", "nc", "nd", "arr", "unknown"
KINDS = (OPEN, NON_COMMERCIAL, NO_DERIVATIVES, ALL_RIGHTS_RESERVED, UNKNOWN)
KIND_LABELS = {OPEN: "open (CC BY, BY-SA, CC0, public domain)", NON_COMMERCIAL: "non-commercial (CC …-NC)",
               NO_DERIVATIVES: "no derivatives (CC …-ND)", ALL_RIGHTS_RESERVED: "all rights reserved",
               UNKNOWN: "unknown"}


@dataclass(frozen=True)
class Licence:
    name: str
    url: str


# Flickr's licence ids, as the Im2GPS photos record them in their `license` comment.
FLICKR_LICENCES = {
    0: Licence("All Rights Reserved", ""),
    1: Licence("CC BY-NC-SA 2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    2: Licence("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0/"),
    3: Licence("CC BY-NC-ND 2.0", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    4: Licence("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    5: Licence("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
    6: Licence("CC BY-ND 2.0", "https://creativecommons.org/licenses/by-nd/2.0/"),
    7: Licence("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    8: Licence("United States Government Work", "https://www.usa.gov/government-copyright"),
    9: Licence("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    10: Licence("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/"),
}


def flickr_licence(licence_id: int | None) -> Licence | None:
    return FLICKR_LICENCES.get(licence_id) if licence_id is not None else None


def licence_kind(name: str | None) -> str:
    """The policy class of a licence name: "CC BY 2.0" -> open, "CC-BY-NC-SA 2.0" -> nc, "CC BY-NC-ND" -> nd,
    "All Rights Reserved" -> arr, "" -> unknown."""
    text = " " + re.sub(r"[^a-z0-9]+", " ", (name or "").lower()) + " "
    if not text.strip():
        return UNKNOWN
    if "all rights reserved" in text:
        return ALL_RIGHTS_RESERVED
    if any(words in text for words in (" cc0 ", " public domain ", " no known copyright ", " government work ")):
        return OPEN
    if text.startswith((" cc ", " creative commons ")) or " attribution " in text:
        if " nd " in text or "noderiv" in text or "no derivative" in text:
            return NO_DERIVATIVES
        if " nc " in text or "noncommercial" in text or "non commercial" in text:
            return NON_COMMERCIAL
        return OPEN
    return UNKNOWN


def is_open_licence(name: str | None) -> bool:
    """True for licences playable everywhere (CC BY, BY-SA, CC0, public domain, US Government, no known
    copyright restrictions); False for NC, ND, All Rights Reserved and unknown (blank) licences."""
    return licence_kind(name) == OPEN


def playable_kinds(*, commercial: bool) -> tuple[str, ...]:
    """The licence kinds that are playable without a staff reason."""
    return (OPEN,) if commercial else (OPEN, NON_COMMERCIAL)


def needs_reason(kind: str, *, commercial: bool) -> bool:
    return kind not in playable_kinds(commercial=commercial)


def licence_fields(name: str | None) -> dict:
    """The stored fields derived from a licence name, for every writer of `GameImage.licence_name`."""
    kind = licence_kind(name)
    return {"licence_kind": kind, "is_open_licence": kind == OPEN}
