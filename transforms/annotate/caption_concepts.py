"""What a caption says about its figure: the taxonomy's concepts it names, and whether it
describes several panels. Pure, Beam-free; one compiled pattern per process."""

from __future__ import annotations

import functools
import re

from transforms.annotate.taxonomy import Taxonomy, load_taxonomy, phrases

SINGLE, MULTIPLE = "single", "multiple"
SINGLE_PANEL = "single panel"

# Global concepts whose panels are images (as opposed to plots, diagrams, tables) or assays:
# what BIOMEDICA's panel subtypes tell apart.
IMAGE_CLASSES = frozenset(
    {
        "Microscopy",
        "Clinical Imaging",
        "Natural Images",
        "Laboratory Specimens and Cultures",
        "Tools and Materials",
    }
)
ASSAY_CLASSES = frozenset({"Immuno Assays", "PCR"})

_SEPARATOR = r"[\s\-\u2010\u2011\u2012\u2013\u2014]+"  # spaces, hyphens and dashes alike
_EDGE_BEFORE, _EDGE_AFTER = r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])"


def _token(token: str) -> str:
    # A token with capitals is (part of) an abbreviation: matched as written.
    return re.escape(token) if token != token.lower() else f"(?i:{re.escape(token)})"


def _pattern(phrase: str) -> str:
    tokens = [t for t in re.split(_SEPARATOR, phrase) if t]
    ending = "s?" if tokens[-1] != tokens[-1].lower() else "(?i:s|es|ing)?"
    return _SEPARATOR.join(_token(t) for t in tokens) + ending


class ConceptFinder:
    """The local concepts a caption names, through the taxonomy's names and our synonyms."""

    def __init__(self, taxonomy: Taxonomy):
        table = phrases(taxonomy)
        # Longest first: at one position the alternation takes the first that matches.
        ordered = sorted(table, key=lambda p: (-len(p), p))
        self.concept_of = [table[p] for p in ordered]
        body = "|".join(f"(?P<p{i}>{_pattern(p)})" for i, p in enumerate(ordered))
        self.regex = re.compile(f"{_EDGE_BEFORE}(?:{body}){_EDGE_AFTER}")

    def concepts(self, caption: str | None) -> list[str]:
        """Distinct local concepts, in the order the caption first names them."""
        found: dict[str, None] = {}
        for match in self.regex.finditer(caption or ""):
            found.setdefault(self.concept_of[int(match.lastgroup[1:])])
        return list(found)


@functools.lru_cache(maxsize=1)
def default_finder() -> ConceptFinder:
    return ConceptFinder(load_taxonomy())


def concepts_in(caption: str | None) -> list[str]:
    return default_finder().concepts(caption)


# Panel cues: "(A)", "(b)", "(A-D)", "(A, B)", "(ii)"; "A)", "B." or "C," opening a sentence;
# the words "panel(s)" ("left panel", "panel B").
_LABEL = r"(?:[A-Ha-h]|i{1,3}|iv|v|vi)"
_IN_PARENS = re.compile(rf"\(\s*({_LABEL}(?:\s*(?:[,;\-\u2013&]|and|to)\s*{_LABEL})*)\s*\)")
_OPENING = re.compile(r"(?:^|[.;:]\s+)\(?([A-H])[).,:](?=\s)")
_PANEL_WORD = re.compile(r"(?i)(?<![A-Za-z])panels?(?![A-Za-z])")
_RANGE = re.compile(r"[\-\u2013]|to")
_LABELS = re.compile(_LABEL)


def panel_type(caption: str | None) -> str:
    """ "multiple" where the caption names panels (two labels or more, a range such as
    "(A-D)", or the word "panel"), else "single"."""
    text = caption or ""
    if _PANEL_WORD.search(text):
        return MULTIPLE
    labels: set[str] = set()
    for match in _IN_PARENS.finditer(text):
        inside = match.group(1)
        if _RANGE.search(inside.replace(" ", "")[1:-1] or ""):
            return MULTIPLE
        labels.update(m.lower() for m in _LABELS.findall(inside))
    labels.update(m.lower() for m in _OPENING.findall(text))
    return MULTIPLE if len(labels) >= 2 else SINGLE


def panel_subtype(kind: str | None, global_classes) -> str | None:
    """BIOMEDICA's subtype from the panel type and the global concepts shown: panels of
    images (with plots, with assays) are told apart; panels all of one other kind are a
    "single panel" in their usage, as is a single figure."""
    if kind is None:
        return None
    if kind != MULTIPLE:
        return SINGLE_PANEL
    classes = set(global_classes)
    images = bool(classes & IMAGE_CLASSES)
    assays = bool(classes & ASSAY_CLASSES)
    others = classes - IMAGE_CLASSES - ASSAY_CLASSES
    if images and assays:
        return "multiple panels: images & assays"
    if images and others:
        return "multiple panels: images & plots"
    if images:
        return "multiple panels: images"
    if len(others) >= 2:
        return "multiple panels: plots"
    return SINGLE_PANEL
