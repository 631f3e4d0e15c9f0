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

# A caption is read as tokens (runs of letters, digits and "&"); a phrase of several words
# matches only tokens that spaces, hyphens or dashes alone separate ("western-blot", not
# "western, blot").
_TOKEN = re.compile(r"[A-Za-z0-9&]+")
_JOINER = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014]+")
_ENDINGS = ("s", "es", "ing")  # of a phrase's last word: plurals and -ing forms


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _form(token: str) -> str:
    """How a phrase's token is matched: as written where it holds a capital (part of an
    abbreviation: "CT", "MRI", "qPCR"), in any case otherwise."""
    return f"={token}" if token != token.lower() else f"~{token}"


class ConceptFinder:
    """The local concepts a caption names, through the taxonomy's names and our synonyms.

    A trie of phrase tokens, walked once per caption token: a caption costs a few dict
    look-ups per word, not a pattern of hundreds of alternatives at every character."""

    END = ""  # key of the concept a phrase ending at a node names

    def __init__(self, taxonomy: Taxonomy):
        self.trie: dict = {}
        for phrase, concept in sorted(phrases(taxonomy).items()):
            node = self.trie
            for token in _tokens(phrase):
                node = node.setdefault(_form(token), {})
            node.setdefault(self.END, concept)

    @staticmethod
    def _keys(token: str, last: bool) -> list[str]:
        keys = [f"={token}", f"~{token.lower()}"]
        if last:  # a plural or -ing form of a phrase's last word
            lower = token.lower()
            for ending in _ENDINGS:
                if lower.endswith(ending) and len(lower) > len(ending) + 1:
                    keys.append(f"~{lower[: -len(ending)]}")
            if token.endswith("s") and token[:-1] != token[:-1].lower():
                keys.append(f"={token[:-1]}")  # "MRIs", "CTs"
        return keys

    def _longest(self, words: list[str], joined: list[bool], start: int) -> tuple[int, str | None]:
        """(tokens taken, concept) of the longest phrase starting at words[start]."""
        best: tuple[int, str | None] = (0, None)
        frontier = [self.trie]
        at = start
        while frontier and at < len(words):
            step = []
            for node in frontier:
                for key in self._keys(words[at], last=False):
                    child = node.get(key)
                    if child is not None:
                        step.append(child)
                for key in self._keys(words[at], last=True)[2:]:
                    child = node.get(key)
                    if child is not None and self.END in child:
                        best = (at - start + 1, child[self.END])
            for child in step:
                if self.END in child:
                    best = (at - start + 1, child[self.END])
            frontier = step
            if at + 1 < len(words) and not joined[at]:
                break
            at += 1
        return best

    def concepts(self, caption: str | None) -> list[str]:
        """Distinct local concepts, in the order the caption first names them; where phrases
        overlap the longest wins ("CT angiography" is angiography, not CT)."""
        if not caption:
            return []
        matches = list(_TOKEN.finditer(caption))
        words = [m.group() for m in matches]
        joined = [
            bool(_JOINER.fullmatch(caption[a.end() : b.start()]))
            for a, b in zip(matches, matches[1:], strict=False)
        ]
        found: dict[str, None] = {}
        at = 0
        while at < len(words):
            taken, concept = self._longest(words, joined, at)
            if concept is not None:
                found.setdefault(concept)
            at += max(1, taken)
        return list(found)


@functools.lru_cache(maxsize=1)
def default_finder() -> ConceptFinder:
    return ConceptFinder(load_taxonomy())


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
