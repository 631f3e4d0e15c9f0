"""Readable text out of JATS elements: block structure kept, MathML linearized.

Pure functions over lxml elements whose tags have already lost their namespaces (see
`jats.parse_document`).
"""

from __future__ import annotations

import html.entities
import re

from lxml import etree

# Elements that start a new line in extracted text.
BLOCK_TAGS = frozenset(
    {
        "p",
        "title",
        "list-item",
        "sec",
        "caption",
        "def-item",
        "disp-quote",
        "tr",
        "boxed-text",
        "statement",
        "ref",
        "abstract",
        "list",
        "def-list",
        "table",
        "disp-formula",
        "speech",
        "verse-line",
        "fn",
        "license-p",
        "attrib",
    }
)
# Elements whose content is not text a reader sees.
SKIP_TAGS = frozenset(
    {
        "graphic",
        "inline-graphic",
        "media",
        "object-id",
        "alt-text",
        "long-desc",
        "annotation",
        "annotation-xml",
        "processing-meta",
    }
)
# Floats that may stand inside a <p>: not part of its sentences (captions, tables, boxes).
FLOAT_TAGS = frozenset(
    {
        "fig",
        "fig-group",
        "table-wrap",
        "table-wrap-group",
        "boxed-text",
        "chem-struct-wrap",
        "supplementary-material",
        "media",
    }
)
# In <alternatives>, the one rendering of the content that becomes text, best first.
_ALTERNATIVE_PREFERENCE = ("math", "tex-math", "textual-form")

_SPACED_OPERATORS = frozenset("=<>≤≥≠≈±×÷→←↔∈∉⊂⊆+−")
_WS = re.compile(r"[ \t\r\f\v\u00a0\u2009\u200a\u2002\u2003]+")
# MathML's invisible operators (function application, times, separator, plus): nothing to read.
_INVISIBLE = re.compile("[\u2061-\u2064]")
# Where a left-out element stood. NUL never occurs in XML text, so it cannot clash.
_GAP = "\x00"
_GAPS = re.compile(r"\x00[\x00 \t]*")  # starts at the gap: linear, whatever the whitespace


def local_name(element) -> str:
    tag = element.tag
    return tag if isinstance(tag, str) else ""


def _entity_text(node) -> str:
    codepoint = html.entities.name2codepoint.get(node.name)
    return chr(codepoint) if codepoint else f"&{node.name};"


def _wrap(part: str) -> str:
    return part if len(part) <= 1 else f"({part})"


def math_text(element) -> str:
    """MathML as a readable line: x^(2), a_i, (a)/(b), √(x)."""
    tag = local_name(element)
    kids = [child for child in element if isinstance(child.tag, str)]
    parts = [math_text(child) for child in kids]
    if tag in ("mi", "mn", "mtext", "ms", "mglyph"):
        return (element.text or "").strip()
    if tag == "mo":
        op = (element.text or "").strip()
        return f" {op} " if op in _SPACED_OPERATORS else op
    if tag == "mspace":
        return " "
    if tag == "msup" and len(parts) == 2:
        return f"{parts[0]}^{_wrap(parts[1].strip())}"
    if tag == "msub" and len(parts) == 2:
        return f"{parts[0]}_{_wrap(parts[1].strip())}"
    if tag == "msubsup" and len(parts) == 3:
        return f"{parts[0]}_{_wrap(parts[1].strip())}^{_wrap(parts[2].strip())}"
    if tag in ("mover", "munder") and len(parts) == 2:
        return f"{parts[0]}{parts[1]}"
    if tag == "munderover" and len(parts) == 3:
        return f"{parts[0]}_{_wrap(parts[1].strip())}^{_wrap(parts[2].strip())}"
    if tag == "mfrac" and len(parts) == 2:
        return f"{_wrap(parts[0].strip())}/{_wrap(parts[1].strip())}"
    if tag == "msqrt":
        return f"√({''.join(parts).strip()})"
    if tag == "mroot" and len(parts) == 2:
        return f"root{_wrap(parts[1].strip())}({parts[0].strip()})"
    if tag == "mfenced":
        open_, close = element.get("open", "("), element.get("close", ")")
        sep = element.get("separators", ",")[:1] or ","
        return f"{open_}{sep.join(p.strip() for p in parts)}{close}"
    if tag == "mtable":
        return "; ".join(p.strip() for p in parts)
    if tag == "mtr":
        return " ".join(p.strip() for p in parts)
    if tag == "semantics":
        return parts[0] if parts else ""
    if tag in ("annotation", "annotation-xml"):
        return ""
    text = "".join(parts)
    if not text.strip() and element.get("alttext"):
        return element.get("alttext")
    return text


def _pick_alternative(element):
    kids = [child for child in element if isinstance(child.tag, str)]
    for wanted in _ALTERNATIVE_PREFERENCE:
        for child in kids:
            if local_name(child) == wanted:
                return child
    return next((c for c in kids if local_name(c) not in SKIP_TAGS), None)


def is_float(element) -> bool:
    """A float (figure, table, box, supplementary file, formula image) that can sit in a <p>."""
    tag = local_name(element)
    if tag in FLOAT_TAGS:
        return True
    # A formula given only as an image is a picture, not part of the sentence.
    return (
        tag == "disp-formula"
        and next(element.iter("graphic"), None) is not None
        and next(element.iter("math", "tex-math"), None) is None
    )


def _source_text(text: str) -> str:
    # Line breaks in the XML source are layout, not text; blocks alone start lines.
    return text.replace("\r", " ").replace("\n", " ")


def _walk(element, out: list[str], skip: frozenset[str], floats: bool) -> None:
    tag = local_name(element)
    if tag == "math":
        out.append(math_text(element))
        return
    if tag == "tex-math":
        out.append(_source_text(element.text or "").strip())
        return
    if tag == "preformat":
        # Code and other preformatted blocks: here the source's line breaks are the text's.
        out.append("\n" + "".join(element.itertext()) + "\n")
        return
    if tag == "alternatives":
        chosen = _pick_alternative(element)
        if chosen is not None:
            _walk(chosen, out, skip, floats)
        return
    block = tag in BLOCK_TAGS
    if block:
        out.append("\n")
    if element.text:
        out.append(_source_text(element.text))
    for child in element:
        if isinstance(child, etree._Entity):
            out.append(_entity_text(child))
        elif isinstance(child.tag, str) and (child.tag in skip or (floats and is_float(child))):
            out.append(_GAP)
        elif isinstance(child.tag, str) and child.tag not in SKIP_TAGS:
            _walk(child, out, skip, floats)
        elif isinstance(child.tag, str) and child.tag in ("break",):
            out.append("\n")
        if child.tail:
            out.append(_source_text(child.tail))
    if tag in ("td", "th"):
        out.append("\t")
    if block:
        out.append("\n")


def _close_gaps(text: str) -> str:
    """One space where a left-out element stood; none before punctuation or after an opening
    bracket."""
    if _GAP not in text:
        return text
    pieces = _GAPS.split(text)
    out = [pieces[0]]
    for piece in pieces[1:]:
        before, after = out[-1].rstrip(" \t"), piece
        joint = after[:1] in (",", ".", ";", ":", "!", "?", ")", "]", "}")
        joint = joint or before[-1:] in ("(", "[", "{")
        out[-1] = before
        out.append(after if joint or not after or not before else " " + after)
    return "".join(out)


def text_of(element, skip: frozenset[str] | set[str] = frozenset(), floats: bool = False) -> str:
    """The text of an element as a reader sees it: one line per block, spaces collapsed.

    Elements named in `skip`, and with `floats` every float nested in the element (what a
    paragraph that cites a figure holds besides its sentences), are left out; the text on
    either side is joined with one space, or none before punctuation.
    """
    if element is None:
        return ""
    out: list[str] = []
    _walk(element, out, frozenset(skip), floats)
    text = _INVISIBLE.sub("", _close_gaps("".join(out)))
    lines = (_WS.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def inline_text(element) -> str:
    """The text of an element on one line."""
    return " ".join(text_of(element).split("\n")).strip()
