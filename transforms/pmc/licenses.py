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

_CC_URL = re.compile(r"creativecommons\.org/licenses/([a-z-]+)/", re.I)


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
        return "CC BY" + "".join("-" + part for part in re.findall(r"NC|SA|ND", match.group(1)))
    return compact


def license_group(code: str | None) -> str:
    """commercial, noncommercial or other, as PMC groups licenses."""
    return _GROUP_OF.get(normalize_license(code), OTHER)
