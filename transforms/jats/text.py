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
# In <alternatives>, the one rendering of the content that becomes text, best first.
_ALTERNATIVE_PREFERENCE = ("math", "tex-math", "textual-form")

_SPACED_OPERATORS = frozenset("=<>≤≥≠≈±×÷→←↔∈∉⊂⊆+−")
_WS = re.compile(r"[ \t\r\f\v\u00a0\u2009\u200a\u2002\u2003]+")


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


def _walk(element, out: list[str], skip: frozenset[str]) -> None:
    tag = local_name(element)
    if tag == "math":
        out.append(math_text(element))
        return
    if tag == "tex-math":
        out.append((element.text or "").strip())
        return
    if tag == "alternatives":
        chosen = _pick_alternative(element)
        if chosen is not None:
            _walk(chosen, out, skip)
        return
    block = tag in BLOCK_TAGS
    if block:
        out.append("\n")
    if element.text:
        out.append(element.text)
    for child in element:
        if isinstance(child, etree._Entity):
            out.append(_entity_text(child))
        elif isinstance(child.tag, str) and child.tag not in SKIP_TAGS and child.tag not in skip:
            _walk(child, out, skip)
        elif isinstance(child.tag, str) and child.tag in ("break",):
            out.append("\n")
        if child.tail:
            out.append(child.tail)
    if tag in ("td", "th"):
        out.append("\t")
    if block:
        out.append("\n")


def text_of(element, skip: frozenset[str] | set[str] = frozenset()) -> str:
    """The text of an element as a reader sees it: one line per block, spaces collapsed."""
    if element is None:
        return ""
    out: list[str] = []
    _walk(element, out, frozenset(skip))
    lines = (_WS.sub(" ", line).strip() for line in "".join(out).split("\n"))
    return "\n".join(line for line in lines if line)


def inline_text(element) -> str:
    """The text of an element on one line."""
    return " ".join(text_of(element).split("\n")).strip()
