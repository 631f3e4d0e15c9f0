"""License codes as PMC writes them, and the three groups PMC sorts them into."""

from __future__ import annotations

import re

COMMERCIAL = "commercial"
NONCOMMERCIAL = "noncommercial"
OTHER = "other"
GROUPS = (COMMERCIAL, NONCOMMERCIAL, OTHER)

_GROUP_OF = {
    "CC0": COMMERCIAL,
    "CC BY": COMMERCIAL,
    "CC BY-SA": COMMERCIAL,
    "CC BY-ND": COMMERCIAL,
    "CC BY-NC": NONCOMMERCIAL,
    "CC BY-NC-SA": NONCOMMERCIAL,
    "CC BY-NC-ND": NONCOMMERCIAL,
}

_CC_URL = re.compile(r"creativecommons\.org/licenses/([a-z-]+)(?![a-z-])", re.I)
_TERMS = ("NC", "SA", "ND")  # PMC's order: CC BY-NC-SA, CC BY-NC-ND


def _cc_by(terms) -> str:
    """CC BY with its terms in PMC's order, whatever order they were written in."""
    found = {t.upper() for t in terms}
    return "CC BY" + "".join("-" + t for t in _TERMS if t in found)


def normalize_license(value: str | None) -> str:
    """A license as one of PMC's codes ("CC BY-NC", "CC0", "NO-CC CODE", ...).

    Takes the codes of file lists and metadata JSON in any spelling, and license URLs
    from JATS `<license xlink:href>` or `<ali:license_ref>`.
    """
    if not value:
        return ""
    text = value.strip()
    match = _CC_URL.search(text)
    if match:
        parts = match.group(1).lower().split("-")
        if parts[0] == "by":
            return _cc_by(parts[1:])
        return "CC " + match.group(1).upper()
    if re.search(r"creativecommons\.org/publicdomain/zero", text, re.I):
        return "CC0"
    if re.search(r"creativecommons\.org/publicdomain/mark", text, re.I):
        return "PDM"
    compact = re.sub(r"[\s_]+", " ", text.upper()).strip()
    if re.fullmatch(r"CC[- ]?0(?:[- ]1\.0)?", compact):
        return "CC0"
    match = re.fullmatch(r"CC[- ]?BY((?:[- ](?:NC|SA|ND))*)(?:[- ]\d\.\d)?", compact)
    if match:
        return _cc_by(re.findall(r"NC|SA|ND", match.group(1)))
    return compact


# License text, read by license_from_text. Dashes of every kind read as "-".
_DASHES = re.compile(r"[\u2010-\u2015\u2212\u00ad]")
_CC_ABBREVIATION = re.compile(r"\bcc[- ]?by((?:[- ]?(?:nc|sa|nd)\b)*)")
_CC_ZERO = re.compile(
    r"\bcc[- ]?(?:0|zero)\b|creative commons zero|public domain dedication|"
    r"creativecommons\.org/publicdomain/zero"
)
# "Creative Commons Attribution-NonCommercial-NoDerivs 3.0 IGO License",
# "Creative Commons License (Attribution 4.0 International)": the terms follow "Attribution".
_CC_NAME = re.compile(r"creative commons\b[^,.;]{0,25}?\battribution\b")
_NAME_ENDS = re.compile(r"licen[cs]e|[,;()]|\.(?!\d)|\b(?:which|that|and|to|for)\b")
_NAME_TERMS = (
    ("NC", re.compile(r"non[- ]?commercial")),
    ("SA", re.compile(r"share[- ]?alike")),
    ("ND", re.compile(r"no[- ]?deriv")),
)
# "... is not distributed under a Creative Commons license": the sentence denies it.
_DENIED = re.compile(r"\b(?:not|no longer|neither|nor)\b")


def license_from_text(text: str | None) -> str:
    """The Creative Commons license a license text grants, as a code; "" when none is named.

    For license statements that give no link: "distributed under the terms of the Creative
    Commons Attribution License", "CC BY-NC-ND 4.0", "CC0 public domain dedication". The
    first license named wins (a CC0 waiver for data often follows an article's CC BY); a
    name in a sentence that denies it ("not under the Creative Commons Attribution
    License") does not count.
    """
    if not text:
        return ""
    lowered = " ".join(_DASHES.sub("-", text[:20000]).lower().split())
    found: list[tuple[int, str]] = []
    for match in _CC_ABBREVIATION.finditer(lowered):
        found.append((match.start(), _cc_by(re.findall(r"nc|sa|nd", match.group(1)))))
    for match in _CC_ZERO.finditer(lowered):
        found.append((match.start(), "CC0"))
    for match in _CC_NAME.finditer(lowered):
        rest = lowered[match.end() : match.end() + 120]
        end = _NAME_ENDS.search(rest)
        name = rest[: end.start()] if end else rest
        found.append((match.start(), _cc_by(t for t, term in _NAME_TERMS if term.search(name))))
    for start, code in sorted(found):
        sentence = lowered[max(lowered.rfind(". ", 0, start), 0) : start]
        if not _DENIED.search(sentence):
            return code
    return ""


def license_group(code: str | None) -> str:
    """commercial, noncommercial or other, as PMC groups licenses."""
    return _GROUP_OF.get(normalize_license(code), OTHER)
