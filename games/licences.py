"""Which photo licences let the game show a photo: Creative Commons (CC BY..., CC0) and public-domain marks."""
from __future__ import annotations

OPEN_PREFIXES = ("cc", "public domain")


def is_open_licence(name: str | None) -> bool:
    """True for "CC-BY 2.0", "CC0 1.0", "Public Domain Mark"...; False for "All Rights Reserved" and unknown (blank)."""
    return (name or "").strip().lower().startswith(OPEN_PREFIXES)
