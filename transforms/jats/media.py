"""Which media file a JATS graphic href points at.

Hrefs in the wild name their file loosely: no extension (PMC: `gr1` for `gr1.jpg`), a `.tif`
that PMC converted to `.jpg`, PLOS `info:doi/10.1371/journal.pone.0008915.g001` for
`journal.pone.0008915.g001.tif` or `pone.0008915.g001.jpg`, or a path. PMC packages ship
every figure twice, a full image and a small `.gif` thumbnail of the same stem; the full
image always wins, and a lone gif where the package follows that convention is a thumbnail,
not the figure.
"""

from __future__ import annotations

import posixpath
import re

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".gif", ".bmp", ".webp")
# Full images first; gif is PMC's thumbnail format.
_PREFERENCE = {
    ext: i
    for i, ext in enumerate((".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"))
}


def _split(name: str) -> tuple[str, str]:
    base = posixpath.basename(name)
    stem, dot, ext = base.rpartition(".")
    if dot and "." + ext.lower() in IMAGE_EXTENSIONS:
        return stem, "." + ext.lower()
    return base, ""


def _href_stems(href: str) -> list[str]:
    value = href.strip()
    if value.lower().startswith("info:doi/"):
        value = value[len("info:doi/") :]
    value = value.split("?")[0].split("#")[0]
    stem, _ = _split(value)
    stems = [stem]
    # PLOS: "10.1371/journal.pone.0008915.g001" -> "journal.pone.0008915.g001", "pone.0008915.g001"
    tail = posixpath.basename(value)
    tail_stem, _ = _split(tail)
    for candidate in (tail_stem, re.sub(r"^journal\.", "", tail_stem)):
        if candidate and candidate not in stems:
            stems.append(candidate)
    return stems


def follows_thumbnail_convention(names: list[str]) -> bool:
    """True where some stem is there both as a full image and as a .gif thumbnail."""
    by_stem: dict[str, set[str]] = {}
    for name in names:
        stem, ext = _split(name)
        if ext:
            by_stem.setdefault(stem.lower(), set()).add(ext)
    return any(".gif" in exts and len(exts) > 1 for exts in by_stem.values())


def resolve(href: str, names: list[str]) -> tuple[str | None, str]:
    """(the media file name for a graphic href, or None, and why not)."""
    if not href:
        return None, "graphic has no href"
    by_stem: dict[str, list[str]] = {}
    for name in names:
        stem, ext = _split(name)
        if ext:
            by_stem.setdefault(stem.lower(), []).append(name)
    exact = posixpath.basename(href.split("?")[0])
    if exact in names and _split(exact)[1] and _split(exact)[1] != ".gif":
        return exact, ""
    for stem in _href_stems(href):
        found = by_stem.get(stem.lower())
        if not found:
            continue
        best = min(found, key=lambda n: (_PREFERENCE.get(_split(n)[1], 99), n))
        if _split(best)[1] == ".gif" and follows_thumbnail_convention(names):
            return None, f"only the thumbnail {best} is present; the full image is missing"
        return best, ""
    return None, f"no media file matches href {href!r}"
