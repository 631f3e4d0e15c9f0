"""The annotator's gallery: one static page, made from the cluster summary. Pure, Beam-free.

`build_gallery(summary)` returns the files of ANN/gallery/ (the thumbnails excepted: annotate
writes those by `thumbnails.thumbnail_path`). The page is self-contained: its script, style and
the summary are inlined, so it opens from disk (file://) or any web server, with no network and
no build step. Labels set in it are saved as BIOMEDICA's `cluster_labels.json`, which annotate
reads back with `--cluster_labels`.

The summary holds captions, which are hostile text: it is embedded as a JSON data block whose
`<`, `>` and `&` are escaped (so no `</script>` or `<!--` in a caption can end the block), the
page's script renders it with text nodes only, and a Content-Security-Policy lets only this
page's own script and style run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from importlib import resources

_ASSETS = "gallery_assets"
# JSON's own escapes for the characters that could end or confuse an HTML script block.
_HTML_SAFE = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"))


def _finite(value):
    """The summary with non-finite floats as null: JSON.parse refuses NaN and Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def embed_json(value) -> str:
    """`value` as JSON that is safe as the text of an HTML <script> element. ensure_ascii
    escapes U+2028/U+2029 and every other non-ASCII character as well."""
    try:
        text = _dumps(value)
    except ValueError:  # a NaN or infinity somewhere: rare, so only then walk the whole value
        text = _dumps(_finite(value))
    for char, escape in _HTML_SAFE:
        text = text.replace(char, escape)
    return text


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(_ASSETS, name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def build_gallery(summary: dict) -> dict[str, bytes]:
    """The gallery's files for the cluster summary (clusters.json content): relative path
    under gallery/ -> bytes. Only "index.html"; it loads thumbnails from thumbs/ beside it."""
    script = _asset("gallery.js")
    style = _asset("gallery.css")
    # Inlined as they are: neither may close its own element early.
    if "</script" in script.lower() or "</style" in style.lower():
        raise ValueError("gallery assets must not contain a closing </script> or </style>")
    # The only script and style allowed are these two; images only from the page's own
    # place (file: covers the page opened from disk) and the empty data: favicon; no fetches,
    # frames or forms.
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_csp_hash(script)}",
            f"style-src {_csp_hash(style)}",
            "img-src 'self' file: data:",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>Cluster gallery</title>",
            # No favicon: a web server would answer the browser's own request with a 404.
            '<link rel="icon" href="data:,">',
            f"<style>{style}</style>",
            "</head>",
            "<body>",
            '<noscript><p class="noscript">The gallery needs JavaScript.</p></noscript>',
            '<div id="app"></div>',
            f'<script type="application/json" id="gallery-data">{embed_json(summary)}</script>',
            f"<script>{script}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )
    return {"index.html": page.encode("utf-8")}
