"""Which discovered article versions a run keeps: pure rules, one reason per exclusion."""

from __future__ import annotations

import re
from dataclasses import dataclass

from transforms.pmc.licenses import GROUPS, license_group
from transforms.records import ArticleRef


def normalize_time(value: str) -> str:
    """ISO 8601 date or datetime, as a sortable UTC string ("" stays "")."""
    value = (value or "").strip()
    if not value:
        return ""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value + "T00:00:00Z"
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.\d+)?Z?", value)
    if match:
        clock = match.group(2) if len(match.group(2)) == 8 else match.group(2) + ":00"
        return f"{match.group(1)}T{clock}Z"
    raise ValueError(f"not an ISO 8601 date or datetime: {value!r}")


@dataclass(frozen=True)
class Selection:
    license_groups: tuple[str, ...] = ()  # empty: every group
    include_retracted: bool = False
    include_non_oa: bool = False
    modified_since: str = ""  # inclusive, ISO 8601
    modified_before: str = ""  # exclusive, ISO 8601
    pmcids: frozenset[str] = frozenset()

    def __post_init__(self):
        unknown = set(self.license_groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown license group(s) {sorted(unknown)}; choose from {GROUPS}")
        object.__setattr__(self, "modified_since", normalize_time(self.modified_since))
        object.__setattr__(self, "modified_before", normalize_time(self.modified_before))

    def wants_pmcid(self, pmcid: str) -> bool:
        return not self.pmcids or pmcid in self.pmcids

    def date_reason(self, last_modified: str) -> str:
        """Why a version falls outside the modification window ("" when it is inside)."""
        if not (self.modified_since or self.modified_before):
            return ""
        try:
            moment = normalize_time(last_modified)
        except ValueError:
            moment = ""
        if not moment:
            return "modified_date_unknown"
        if self.modified_since and moment < self.modified_since:
            return "modified_before_window"
        if self.modified_before and moment >= self.modified_before:
            return "modified_after_window"
        return ""

    def reason(self, ref: ArticleRef, is_open_access: bool = True) -> str:
        """Why a ref is left out ("" when it is kept)."""
        if not self.wants_pmcid(ref.pmcid):
            return "pmcid_not_requested"
        if ref.retracted and not self.include_retracted:
            return "retracted"
        if not is_open_access and not self.include_non_oa:
            return "not_open_access"
        # A license the listing does not give is checked after parsing, from the XML.
        if ref.license_code and self.license_reason(ref.license_code):
            return self.license_reason(ref.license_code)
        return self.date_reason(ref.last_modified)

    def license_reason(self, license_code: str) -> str:
        if self.license_groups and license_group(license_code) not in self.license_groups:
            return "license_group_not_requested"
        return ""


@dataclass(frozen=True)
class Copy:
    """One place where an article version was found."""

    version: int | None  # None where the source has no versions
    last_modified: str  # ISO 8601; ranks unversioned copies (the newest file list date wins)
    location: str
    item: object = None  # what the caller keeps (a ref, a listing entry)


def choose_copies(copies: list[Copy], all_versions: bool = False):
    """Which copies of one article a run keeps, deterministically.

    One copy per version: the latest version first, then the newest modification, then the
    smallest location. Without `all_versions` only the latest version is kept. Returns
    (kept, [(left out, reason, the kept copy it yields to)]), reasons `duplicate_version` or
    `superseded_version`.
    """
    ranked = sorted(copies, key=lambda c: c.location)
    # Stable: among equal versions and dates, the location order above holds.
    ranked.sort(key=lambda c: (c.version or 0, _sortable(c.last_modified)), reverse=True)
    kept: dict[int, Copy] = {}
    left_out = []
    for copy in ranked:
        version = copy.version or 0
        if version in kept:
            left_out.append((copy, "duplicate_version", kept[version]))
        elif kept and not all_versions:
            left_out.append((copy, "superseded_version", ranked[0]))
        else:
            kept[version] = copy
    return list(kept.values()), left_out


def _sortable(value: str) -> str:
    try:
        return normalize_time(value)
    except ValueError:
        return ""
