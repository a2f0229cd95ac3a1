"""The metadata blocks of JPEG and WebP files, read without decoding a pixel: every JPEG comment (COM) segment,
which Pillow reduces to one, and the check that a copy the image door wrote carries no metadata at all.

Django-free: used by the image door (core/images.py), the Im2GPS reader (core/im2gps.py) and the tests.
"""
from __future__ import annotations

from dataclasses import dataclass

SOI, EOI, SOS, COM = 0xD8, 0xD9, 0xDA, 0xFE
APP0, APP15 = 0xE0, 0xEF
# Markers without a length field: TEM, the restart markers, SOI and EOI.
_STANDALONE = {0x01, *range(0xD0, 0xD8), SOI, EOI}
_APP_NAMES = {0xE0: "APP0", 0xE1: "APP1 (EXIF/XMP)", 0xE2: "APP2 (ICC profile/FlashPix)", 0xED: "APP13 (IPTC)",
              0xEE: "APP14 (Adobe)"}
# WebP chunks that carry metadata (the VP8X header announces them; ALPH/ANIM/ANMF are image data).
WEBP_METADATA_CHUNKS = {b"EXIF", b"XMP ", b"ICCP"}


class NotParseable(ValueError):
    """The bytes are not a well-formed JPEG or WebP file; the message says where they stop making sense."""


@dataclass(frozen=True)
class Segment:
    """One JPEG marker segment: its marker byte, where it starts in the file, and its payload (length excluded)."""

    marker: int
    offset: int
    payload: bytes

    @property
    def name(self) -> str:
        if self.marker == COM:
            return "COM (comment)"
        if APP0 <= self.marker <= APP15:
            return _APP_NAMES.get(self.marker, f"APP{self.marker - APP0}")
        return f"marker 0x{self.marker:02X}"


def jpeg_segments(data: bytes) -> list[Segment]:
    """Every marker segment of a JPEG, including those between the scans of a progressive file.

    The entropy-coded data after each SOS is skipped (stuffed 0xFF00 bytes and restart markers are not segments).
    """
    if data[:2] != b"\xff\xd8":
        raise NotParseable("not a JPEG file (no SOI marker)")
    out: list[Segment] = []
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise NotParseable(f"byte {pos}: expected a marker")
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            break
        marker, start = data[pos], pos - 1
        pos += 1
        if marker == EOI:
            break
        if marker in _STANDALONE:
            continue
        if pos + 2 > size:
            raise NotParseable(f"byte {start}: segment 0x{marker:02X} is cut off")
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + length > size:
            raise NotParseable(f"byte {start}: segment 0x{marker:02X} has a bad length ({length})")
        out.append(Segment(marker, start, data[pos + 2:pos + length]))
        pos += length
        if marker == SOS:
            pos = _end_of_scan(data, pos)
    return out


def _end_of_scan(data: bytes, pos: int) -> int:
    """The offset of the first real marker after entropy-coded data starting at `pos`."""
    size = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= size:
            return size
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte or restart marker
            pos += 2
            continue
        if following == 0xFF:
            pos += 1  # fill byte before a marker
            continue
        return pos


def jpeg_comments(data: bytes) -> list[bytes]:
    """The payload of every COM segment, in file order (Pillow's `info['comment']` keeps only one)."""
    return [segment.payload for segment in jpeg_segments(data) if segment.marker == COM]


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(FourCC, payload) of every chunk of a WebP file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise NotParseable("not a WebP file (no RIFF/WEBP header)")
    end = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    out, pos = [], 12
    while pos + 8 <= end:
        fourcc, length = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if pos + 8 + length > end:
            raise NotParseable(f"byte {pos}: chunk {fourcc!r} is cut off")
        out.append((fourcc, data[pos + 8:pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return out


def metadata_blocks(data: bytes) -> list[str]:
    """A description of every metadata block in a JPEG or WebP file; empty for a clean copy.

    For JPEG, everything but a bare JFIF APP0 header counts: comments, EXIF, XMP, ICC profiles, IPTC, Adobe and
    other APPn segments, and JFIF/JFXX thumbnails. For WebP, EXIF, XMP and ICCP chunks and VP8X metadata flags.
    """
    if data[:4] == b"RIFF":
        found = [f"WebP {fourcc.decode('latin-1').strip()} chunk" for fourcc, _ in webp_chunks(data)
                 if fourcc in WEBP_METADATA_CHUNKS]
        for fourcc, payload in webp_chunks(data):
            if fourcc == b"VP8X" and payload and payload[0] & 0b00101100:  # ICC, EXIF or XMP flag
                found.append("WebP VP8X header announcing metadata")
        return found
    found = []
    for segment in jpeg_segments(data):
        if segment.marker == APP0 and _bare_jfif(segment.payload):
            continue
        if segment.marker == COM or APP0 <= segment.marker <= APP15:
            found.append(f"{segment.name} at byte {segment.offset}")
    return found


def _bare_jfif(payload: bytes) -> bool:
    # JFIF\0, version (2), units (1), densities (4), thumbnail width and height (1 + 1): no thumbnail pixels.
    return payload[:5] == b"JFIF\x00" and len(payload) >= 14 and payload[12] == 0 and payload[13] == 0
