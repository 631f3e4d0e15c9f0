"""A synthetic PMC Cloud corpus for tests and benchmarks: pure, Beam-free.

Writes what the AWS Open Data bucket `pmc-oa-opendata` holds, at a small scale: one folder
per article version (`PMC<id>.<ver>/` with the JATS XML, the plain text and the media
files), the metadata JSON per version under `metadata/`, and an S3 inventory of the
metadata under `inventory-reports/`. Every article is made from its own seeded generator,
so the output is byte-identical for the same arguments, whatever the order or the number of
worker processes. The corpus mixes the XML and media variants real packages show, and holds
deliberate exact and near duplicate figures, listed in `sample_manifest.json`.

Every graphic shows one kind of picture (KINDS: plot, micrograph, diagram, blot, heatmap,
photograph, scan) in all of its panels, a pure function of (seed, article index, graphic
number): `graphic_kind`. Most captions name it. The manifest's `figure_kinds` gives every
graphic file's kind (`figure_kinds`, `row_kind` read it).

Beside the PMC layout, `pubmed/` holds the articles' PubMed records as MEDLINE XML, a
baseline and an update file (transforms.pmc.sample_medline), for `biomedica enrich`; the
manifest's `pubmed` says what enrich finds for each PMID.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache, partial
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from transforms import storage
from transforms.pmc import sample_medline

BUCKET = "pmc-oa-opendata"
INVENTORY_DATE = "2026-11-01T01-00Z"
INVENTORY_PREFIX = f"inventory-reports/{BUCKET}/metadata"
INVENTORY_MANIFEST = f"{INVENTORY_PREFIX}/{INVENTORY_DATE}/manifest.json"
MANIFEST_NAME = "sample_manifest.json"
THUMBNAIL_SIDE = 120

_INVENTORY_MS = int(datetime(2026, 11, 1, 1, 0, tzinfo=UTC).timestamp() * 1000)
_FIRST_DAY = date(2023, 1, 1)
_LAST_DAY = date(2026, 10, 30)
_SPAN_DAYS = (_LAST_DAY - _FIRST_DAY).days

_JATS_NS = "https://jats.nlm.nih.gov/ns/archiving/1.3/"
_DOCTYPE = (
    '<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange '
    'DTD with MathML3 v1.3 20210610//EN" "JATS-archive-oasis-article1-3-mathml3.dtd">'
)
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

# code: (license URL or None, license text)
LICENSES = {
    "CC BY": ("https://creativecommons.org/licenses/by/4.0/", "Attribution 4.0 International"),
    "CC BY-SA": (
        "https://creativecommons.org/licenses/by-sa/4.0/",
        "Attribution-ShareAlike 4.0 International",
    ),
    "CC0": ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0 1.0 Universal"),
    "CC BY-NC": (
        "https://creativecommons.org/licenses/by-nc/4.0/",
        "Attribution-NonCommercial 4.0 International",
    ),
    "CC BY-NC-ND": (
        "https://creativecommons.org/licenses/by-nc-nd/4.0/",
        "Attribution-NonCommercial-NoDerivatives 4.0 International",
    ),
    "NO-CC CODE": (None, "free to read in PubMed Central under the publisher's terms"),
}
# Spread over articles by index: every code within the first 10 articles.
_LICENSE_CYCLE = (
    "CC BY",
    "CC BY-NC",
    "CC BY",
    "CC0",
    "CC BY-NC-ND",
    "CC BY",
    "CC BY-SA",
    "NO-CC CODE",
    "CC BY",
    "CC BY-NC",
)

_JOURNALS = (
    ("Sample Journal of Biomedicine", "Sample J Biomed", "2049-0001", "Example Science Press"),
    ("Synthetic Cell Reports", "Synth Cell Rep", "2049-0002", "Placeholder Publishing"),
    ("Journal of Imaginary Oncology", "J Imag Oncol", "2049-0003", "Example Science Press"),
    ("Mock Neuroscience Letters", "Mock Neurosci Lett", "2049-0004", "Fictional Academic"),
    ("Test Immunology Open", "Test Immunol Open", "2049-0005", "Placeholder Publishing"),
    ("Archives of Dummy Pathology", "Arch Dummy Pathol", "2049-0006", "Fictional Academic"),
)
_SUBJECTS = (
    "Research Article",
    "Cell Biology",
    "Oncology",
    "Neuroscience",
    "Immunology",
    "Microbiology",
    "Genetics",
    "Pharmacology",
    "Cardiology",
    "Structural Biology",
)
_GENES = (
    "TP53",
    "EGFR",
    "KRAS",
    "BRCA1",
    "MYC",
    "PTEN",
    "STAT3",
    "NF-κB",
    "IL-6",
    "TNF-α",
    "VEGFA",
    "CDK4",
    "HIF-1α",
    "SOX2",
    "GAPDH",
    "mTOR",
    "AKT1",
    "CD8",
    "FOXP3",
    "PD-L1",
)
_CELLS = (
    "HeLa cells",
    "primary hepatocytes",
    "cortical neurons",
    "CD4+ T cells",
    "macrophages",
    "fibroblasts",
    "HEK293T cells",
    "organoids",
    "endothelial cells",
    "cardiomyocytes",
    "keratinocytes",
    "tumor spheroids",
    "bone marrow stromal cells",
    "microglia",
)
_TISSUES = (
    "liver",
    "hippocampus",
    "lung",
    "kidney cortex",
    "colon",
    "skeletal muscle",
    "retina",
    "spleen",
    "myocardium",
    "pancreatic islets",
    "skin",
    "lymph nodes",
)
_DISEASES = (
    "fibrosis",
    "hepatocellular carcinoma",
    "Alzheimer's disease",
    "sepsis",
    "type 2 diabetes",
    "glioblastoma",
    "atherosclerosis",
    "rheumatoid arthritis",
    "acute kidney injury",
    "colorectal cancer",
    "asthma",
    "heart failure",
)
_METHODS = (
    "western blotting",
    "quantitative PCR",
    "flow cytometry",
    "confocal microscopy",
    "RNA sequencing",
    "immunohistochemistry",
    "ELISA",
    "CRISPR-Cas9 knockout",
    "mass spectrometry",
    "live-cell imaging",
    "chromatin immunoprecipitation",
    "single-cell RNA sequencing",
)
_TREATMENTS = (
    "rapamycin",
    "cisplatin",
    "lipopolysaccharide",
    "metformin",
    "dexamethasone",
    "a small-molecule inhibitor",
    "siRNA knockdown",
    "hypoxia",
    "doxorubicin",
    "interferon-γ",
)
_VERBS = (
    "increased",
    "reduced",
    "abolished",
    "enhanced",
    "attenuated",
    "restored",
    "altered",
    "suppressed",
    "promoted",
    "did not affect",
)
_NOUNS = (
    "expression",
    "phosphorylation",
    "proliferation",
    "apoptosis",
    "migration",
    "secretion",
    "activation",
    "nuclear translocation",
    "mitochondrial respiration",
    "autophagic flux",
)
_SURNAMES = (
    "Smith",
    "Garcia",
    "Chen",
    "Müller",
    "Kowalski",
    "Tanaka",
    "Okafor",
    "Rossi",
    "Novak",
    "Haddad",
    "Johansson",
    "Silva",
    "Kim",
    "Dubois",
    "Patel",
    "Nguyen",
)
_GIVEN = ("A", "B", "C", "D", "E", "F", "H", "J", "K", "L", "M", "N", "P", "R", "S", "T")
_SECTIONS = ("Introduction", "Materials and methods", "Results", "Discussion")


# ---- the plan of an article: cheap, pure, order-independent ------------------------------


@dataclass
class GraphicSpec:
    number: int  # 1-based, over all the article's full images, in document order
    stem: str  # PMC9000001-g001
    href: str
    fmt: str  # jpeg, gray, png, tiff
    alternatives: bool = False  # <alternatives> with the .gif thumbnail graphic too
    dup: str | None = None  # exact or near
    dup_source: int = 0  # article index of the source
    dup_pick: float = 0.0  # which eligible figure of the source


@dataclass
class FigureSpec:
    fig_id: str
    kind: str  # fig or table
    label: str
    graphics: list[GraphicSpec]
    group: str | None = None  # fig-group id
    mathml: bool = False
    list_caption: bool = False


@dataclass
class ArticlePlan:
    index: int
    pmcid: str
    pmid: str
    versions: int
    license_code: str
    retracted: bool
    open_access: bool
    journal: tuple[str, str, str, str]
    default_ns: bool
    doctype: bool
    pis: bool
    inline_graphic: bool
    figures: list[FigureSpec]
    modified: list[datetime]  # per version
    published: date
    text_seed: int
    features: list[str] = field(default_factory=list)


def _article_seed(seed: int, index: int) -> int:
    return seed * 1_000_003 + index


def plan_article(seed: int, index: int, start_pmcid: int = 9_000_001) -> ArticlePlan:
    rng = random.Random(_article_seed(seed, index))
    pmcid = f"PMC{start_pmcid + index}"
    features: list[str] = []
    n_figs = rng.choices((1, 2, 3, 4, 5, 6), weights=(2, 4, 5, 4, 3, 2))[0]
    fig_group = index % 7 == 3
    multi_panel = index % 6 == 4
    alternatives = index % 9 == 2
    table = index % 8 == 1
    tif_href = index % 6 == 1
    real_tiff = index % 10 == 4
    png = index % 4 == 2
    gray = index % 11 == 3
    mathml = index % 4 == 3
    list_caption = index % 5 == 2
    if fig_group:
        n_figs = max(n_figs, 3)
    if multi_panel:
        n_figs = max(n_figs, 2)

    figures: list[FigureSpec] = []
    graphic_number = 0

    def new_graphic(prefix: str = "g") -> GraphicSpec:
        nonlocal graphic_number
        graphic_number += 1
        stem = f"{pmcid}-{prefix}{graphic_number:03d}"
        return GraphicSpec(number=graphic_number, stem=stem, href=stem, fmt="jpeg")

    for k in range(1, n_figs + 1):
        fig = FigureSpec(fig_id=f"F{k}", kind="fig", label=f"Figure {k}", graphics=[new_graphic()])
        if multi_panel and k == 2:
            fig.graphics.append(new_graphic())
            features.append("multi_panel")
        figures.append(fig)
    if fig_group:
        for fig in figures[1:3]:
            fig.group = "FG1"
        features.append("fig_group")
    if alternatives:
        figures[0].graphics[0].alternatives = True
        features.append("alternatives")
    if mathml:
        figures[-1].mathml = True
        features.append("mathml_caption")
    if list_caption:
        figures[0].list_caption = True
        features.append("list_caption")
    if table:
        graphic_number += 1
        stem = f"{pmcid}-t{1:03d}"
        figures.append(
            FigureSpec(
                fig_id="T1",
                kind="table",
                label="Table 1",
                graphics=[GraphicSpec(number=graphic_number, stem=stem, href=stem, fmt="jpeg")],
            )
        )
        features.append("table_graphic")

    simple = [f.graphics[0] for f in figures if f.kind == "fig" and len(f.graphics) == 1]
    if png:
        figures[-1].graphics[-1].fmt = "png"
    if real_tiff:
        simple[-1].fmt = "tiff"
        features.append("tiff_file")
    if gray:
        simple[0].fmt = "gray"
        features.append("gray_jpeg")
    if tif_href:
        target = next((g for g in simple if g.fmt == "jpeg"), None)
        if target is not None:
            target.href = f"{target.stem}.tif"
            features.append("tif_href_jpg_file")
    for fig in figures:
        for graphic in fig.graphics:
            if fig.kind == "fig" and graphic.fmt == "jpeg" and graphic.href == graphic.stem:
                if rng.random() < 0.05:
                    graphic.href = f"{graphic.stem}.jpg"
            if rng.random() < 0.06 and graphic.fmt == "jpeg" and fig.kind == "fig":
                graphic.fmt = "png"

    # Deliberate duplicates of earlier articles' figures: plain single-graphic JPEG figures.
    forced = {10: "exact", 17: "near"}.get(index % 40)
    for graphic in simple:
        draw_kind, draw_source, draw_pick = rng.random(), rng.random(), rng.random()
        if index == 0 or graphic.fmt != "jpeg" or graphic.alternatives:
            continue
        kind = None
        if forced:
            kind, forced = forced, None
        elif draw_kind < 1 / 50:
            kind = "exact"
        elif draw_kind < 2 / 50:
            kind = "near"
        if kind:
            graphic.dup = kind
            graphic.dup_source = int(draw_source * index)
            graphic.dup_pick = draw_pick
            graphic.href = graphic.stem

    versions = 2 if index % 8 == 5 else 1
    first = _FIRST_DAY + timedelta(days=rng.randrange(_SPAN_DAYS - 10))
    modified = [
        datetime(
            first.year,
            first.month,
            first.day,
            rng.randrange(24),
            rng.randrange(60),
            rng.randrange(60),
            tzinfo=UTC,
        )
    ]
    later = rng.randint(1, max(1, min(300, (_LAST_DAY - first).days)))
    if versions == 2:
        modified.append(modified[0] + timedelta(days=later, hours=rng.randrange(-2, 3)))
        features.append("two_versions")
    published = first - timedelta(days=rng.randint(0, 90))
    journal = _JOURNALS[rng.randrange(len(_JOURNALS))]
    plan = ArticlePlan(
        index=index,
        pmcid=pmcid,
        pmid=str(38_000_000 + (start_pmcid - 9_000_001) + index),
        versions=versions,
        license_code=_LICENSE_CYCLE[index % len(_LICENSE_CYCLE)],
        retracted=index % 25 == 7,
        open_access=index % 30 != 11,
        journal=journal,
        default_ns=index % 4 == 1,
        doctype=index % 3 == 0,
        pis=index % 5 == 2,
        inline_graphic=index % 5 == 0,
        figures=figures,
        modified=modified,
        published=published,
        text_seed=rng.getrandbits(64),
        features=features,
    )
    for name, on in (
        ("default_namespace", plan.default_ns),
        ("doctype", plan.doctype),
        ("processing_instructions", plan.pis),
        ("inline_graphic", plan.inline_graphic),
    ):
        if on:
            features.append(name)
    return plan


# ---- images ------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


_PALETTES = (
    ((20, 60, 160), (230, 90, 40), (60, 160, 80), (200, 180, 40), (140, 60, 160)),
    ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233)),
    ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)),
)


def _smooth_field(rng: np.random.Generator, w: int, h: int, cells: int = 6) -> np.ndarray:
    """A smooth random field in [0, 1] of shape (h, w), from a coarse grid upsampled in C."""
    gw, gh = max(2, cells), max(2, int(cells * h / w) + 1)
    grid = (rng.random((gh, gw)) * 255).astype(np.uint8)
    image = Image.fromarray(grid, "L").resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255.0


def _fluorescence(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Confocal/epifluorescence: blurred cells in a few channels on a dark field."""
    lw, lh = max(8, w // 4), max(8, h // 4)
    channels = []
    for _ in range(3):
        layer = Image.new("L", (lw, lh), 0)
        draw = ImageDraw.Draw(layer)
        for _ in range(int(rng.integers(6, 30))):
            cx, cy = rng.random() * lw, rng.random() * lh
            r = (0.02 + rng.random() * 0.08) * lw
            draw.ellipse(
                [cx - r, cy - r * (0.6 + rng.random()), cx + r, cy + r],
                fill=int(rng.integers(80, 255)),
            )
        layer = layer.filter(ImageFilter.GaussianBlur(1.5 + rng.random() * 2))
        channels.append(np.asarray(layer, dtype=np.float32))
    stack = np.stack(channels, axis=-1)
    stack *= 0.6 + 0.6 * _smooth_field(rng, lw, lh, 4)[..., None]
    stack += rng.normal(0, 10, stack.shape).astype(np.float32) + 8
    low = Image.fromarray(np.clip(stack, 0, 255).astype(np.uint8), "RGB")
    return low.resize((w, h), Image.Resampling.BILINEAR)


# Brightfield stains: (background, stroma, nuclei, extra chromogen or None).
_STAINS = (
    ((246, 238, 242), (232, 150, 186), (88, 52, 134), None),  # H&E
    ((244, 242, 238), (214, 196, 200), (92, 102, 160), (136, 84, 38)),  # IHC: DAB on hematoxylin
    ((240, 244, 246), (120, 160, 210), (70, 60, 120), None),  # trichrome-like
)


def _brightfield(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A stained tissue section (H&E, IHC): pink stroma and purple nuclei on a pale slide."""
    lw, lh = max(8, w // 4), max(8, h // 4)
    background, stroma, nucleus, chromogen = (
        np.array(c, dtype=np.float32) if c else None
        for c in _STAINS[int(rng.integers(len(_STAINS)))]
    )
    tissue = np.clip(_smooth_field(rng, lw, lh, 5) * 1.8 - 0.3, 0, 1)[..., None]
    layer = Image.new("L", (lw, lh), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(max(10, lw * lh // int(rng.integers(60, 200)))):
        cx, cy = rng.random() * lw, rng.random() * lh
        r = 0.6 + rng.random() * 1.6
        draw.ellipse([cx - r, cy - r * (0.6 + rng.random() * 0.6), cx + r, cy + r], fill=255)
    nuclei = np.asarray(layer.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32)[..., None]
    nuclei = nuclei / 255.0 * tissue
    image = background * (1 - tissue) + stroma * tissue
    image = image * (1 - nuclei) + nucleus * nuclei
    if chromogen is not None:
        brown = np.clip(_smooth_field(rng, lw, lh, 8) * 2.2 - 1.2, 0, 1)[..., None] * tissue
        image = image * (1 - brown) + chromogen * brown
    image += rng.standard_normal(image.shape, dtype=np.float32) * 5
    low = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")
    return low.resize((w, h), Image.Resampling.BILINEAR)


def _micrograph(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    image = (_fluorescence if rng.random() < 0.5 else _brightfield)(rng, w, h)
    draw = ImageDraw.Draw(image)
    bar = int(w * (0.1 + rng.random() * 0.1))
    dark = image.getpixel((w - w // 10, h - h // 12))
    fill = (255, 255, 255) if sum(dark) < 384 else (0, 0, 0)
    draw.rectangle(
        [w - bar - w // 20, h - h // 15, w - w // 20, h - h // 15 + max(3, h // 120)],
        fill=fill,
    )
    return image


def _tinted_canvas(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    base = (
        np.array((250, 250, 250), dtype=np.float32)
        - 60
        * np.stack([_smooth_field(rng, w // 4, h // 4, 3) for _ in range(3)], axis=-1)
        * rng.random()
    )
    low = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    return low.resize((w, h), Image.Resampling.BILINEAR)


def _axes(draw: ImageDraw.ImageDraw, w: int, h: int) -> tuple[int, int, int, int]:
    left, top, right, bottom = w // 8, h // 10, w - w // 20, h - h // 8
    width = max(2, w // 400)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=(0, 0, 0), width=width)
    for i in range(6):
        y = bottom - (bottom - top) * i // 5
        draw.line([(left - w // 80, y), (left, y)], fill=(0, 0, 0), width=width)
        draw.text(
            (left - w // 14, y - h // 60), f"{i * 20}", fill=(0, 0, 0), font=_font(max(10, h // 40))
        )
    return left, top, right, bottom


def _bars(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    image = _tinted_canvas(rng, w, h)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _axes(draw, w, h)
    palette = _PALETTES[int(rng.integers(len(_PALETTES)))]
    groups, per = int(rng.integers(2, 9)), int(rng.integers(1, 4))
    slot = (right - left) / (groups * (per + 1) + 1)
    for g in range(groups):
        for p in range(per):
            x0 = left + slot * (1 + g * (per + 1) + p)
            value = 0.1 + 0.85 * rng.random()
            y0 = bottom - (bottom - top) * value
            draw.rectangle([x0, y0, x0 + slot * 0.9, bottom], fill=palette[p], outline=(0, 0, 0))
            err = (bottom - top) * 0.05 * rng.random()
            xm = x0 + slot * 0.45
            draw.line([(xm, y0 - err), (xm, y0 + err)], fill=(0, 0, 0), width=max(1, w // 500))
        if rng.random() < 0.5:
            draw.text(
                (left + slot * (1 + g * (per + 1)), top),
                "*",
                fill=(0, 0, 0),
                font=_font(max(12, h // 20)),
            )
    return image


def _lines(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    image = _tinted_canvas(rng, w, h)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _axes(draw, w, h)
    palette = _PALETTES[int(rng.integers(len(_PALETTES)))]
    points = int(rng.integers(8, 40))
    xs = np.linspace(left + 10, right - 10, points)
    for s in range(int(rng.integers(1, 5))):
        walk = np.cumsum(rng.normal(0, 1, points))
        walk = (walk - walk.min()) / (np.ptp(walk) + 1e-6)
        ys = bottom - (bottom - top) * (0.1 + 0.8 * walk)
        color = palette[s % len(palette)]
        points_xy = list(zip(xs.tolist(), ys.tolist(), strict=True))
        draw.line(points_xy, fill=color, width=max(2, w // 250))
        r = max(3, w // 150)
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    return image


def _heatmap(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    rows, cols = int(rng.integers(6, 30)), int(rng.integers(4, 16))
    values = rng.random((rows, cols))
    values = values + _smooth_field(rng, cols, rows, 3)
    values = (values - values.min()) / (np.ptp(values) + 1e-6)
    palette = np.array(_PALETTES[int(rng.integers(len(_PALETTES)))], dtype=np.float32)
    idx = values * (len(palette) - 1)
    lo = np.floor(idx).astype(int)
    hi = np.minimum(lo + 1, len(palette) - 1)
    frac = (idx - lo)[..., None]
    colors = palette[lo] * (1 - frac) + palette[hi] * frac
    grid = Image.fromarray(colors.astype(np.uint8), "RGB")
    image = Image.new("RGB", (w, h), (255, 255, 255))
    inner = (w - w // 6, h - h // 10)
    image.paste(grid.resize(inner, Image.Resampling.NEAREST), (w // 8, h // 20))
    return image


def _blot(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    lw, lh = max(8, w // 4), max(8, h // 4)
    layer = Image.new("L", (lw, lh), 235)
    draw = ImageDraw.Draw(layer)
    lanes, rows = int(rng.integers(4, 12)), int(rng.integers(2, 6))
    for r in range(rows):
        y = lh * (r + 0.5) / rows
        for lane in range(lanes):
            x = lw * (lane + 0.5) / lanes
            strength = rng.random()
            half = lw / lanes * 0.38
            draw.ellipse(
                [x - half, y - lh / rows * 0.12, x + half, y + lh / rows * 0.12],
                fill=int(235 - 220 * strength),
            )
    layer = layer.filter(ImageFilter.GaussianBlur(1.2))
    array = np.asarray(layer, dtype=np.float32) + rng.normal(0, 4, (lh, lw)).astype(np.float32)
    low = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
    return low.resize((w, h), Image.Resampling.BILINEAR).convert("RGB")


def _scatter(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    image = _tinted_canvas(rng, w, h)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _axes(draw, w, h)
    palette = _PALETTES[int(rng.integers(len(_PALETTES)))]
    r = max(2, w // 200)
    for s in range(int(rng.integers(1, 4))):
        n = int(rng.integers(15, 80))
        slope = rng.normal(0, 0.6)
        xs = rng.random(n)
        ys = np.clip(0.5 + slope * (xs - 0.5) + rng.normal(0, 0.12, n) + 0.1 * s, 0.02, 0.98)
        color = palette[s % len(palette)]
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
            px, py = left + (right - left) * x, bottom - (bottom - top) * y
            draw.ellipse([px - r, py - r, px + r, py + r], fill=color, outline=(0, 0, 0))
        if rng.random() < 0.6:
            y0, y1 = 0.5 - slope / 2 + 0.1 * s, 0.5 + slope / 2 + 0.1 * s
            draw.line(
                [(left, bottom - (bottom - top) * y0), (right, bottom - (bottom - top) * y1)],
                fill=color,
                width=max(1, w // 300),
            )
    return image


def _plot(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    return (_bars, _lines, _scatter)[int(rng.integers(3))](rng, w, h)


# Photograph scenes: (backdrop colours, subject colours, lesion colours).
_SCENES = (
    (
        ((48, 96, 92), (30, 70, 80)),
        ((222, 176, 148), (196, 140, 112)),
        ((150, 60, 60), (96, 40, 36)),
    ),
    (
        ((40, 40, 46), (70, 66, 72)),
        ((180, 120, 100), (140, 80, 70)),
        ((110, 30, 40), (200, 170, 120)),
    ),
    (
        ((60, 84, 140), (36, 52, 100)),
        ((236, 196, 170), (210, 160, 130)),
        ((170, 80, 70), (80, 50, 40)),
    ),
    (
        ((120, 100, 80), (90, 70, 56)),
        ((200, 90, 90), (170, 60, 70)),
        ((240, 210, 180), (120, 40, 50)),
    ),
)


def _photograph(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A clinical or specimen photo: a lit subject on a backdrop, with textured lesions."""
    lw, lh = max(8, w // 5), max(8, h // 5)
    backdrop, subject, lesion = (
        [np.array(c, dtype=np.float32) for c in pair]
        for pair in _SCENES[int(rng.integers(len(_SCENES)))]
    )
    shade = _smooth_field(rng, lw, lh, 3)[..., None]
    image = backdrop[0] * shade + backdrop[1] * (1 - shade)
    # The subject: a large soft blob off centre (skin, an organ, a specimen).
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    cx, cy = lw * (0.3 + 0.4 * rng.random()), lh * (0.3 + 0.4 * rng.random())
    rx, ry = lw * (0.35 + 0.3 * rng.random()), lh * (0.35 + 0.3 * rng.random())
    wobble = _smooth_field(rng, lw, lh, 4) * 0.5
    body = np.clip((1.0 + wobble - ((xx - cx) / rx) ** 2 - ((yy - cy) / ry) ** 2) * 3, 0, 1)
    tone = _smooth_field(rng, lw, lh, 5)[..., None]
    skin = subject[0] * tone + subject[1] * (1 - tone)
    image = image * (1 - body[..., None]) + skin * body[..., None]
    for _ in range(int(rng.integers(1, 4))):  # lesions, each drawn within its own box
        lx, ly = cx + (rng.random() - 0.5) * rx, cy + (rng.random() - 0.5) * ry
        sx, sy = lw * (0.04 + 0.12 * rng.random()), lh * (0.04 + 0.12 * rng.random())
        x0, x1 = max(0, int(lx - 1.4 * sx)), min(lw, int(lx + 1.4 * sx) + 1)
        y0, y1 = max(0, int(ly - 1.4 * sy)), min(lh, int(ly + 1.4 * sy) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        bw, bh = x1 - x0, y1 - y0
        edge = _smooth_field(rng, bw, bh, 5) * 0.8
        bx, by = xx[y0:y1, x0:x1], yy[y0:y1, x0:x1]
        spot = np.clip((1.0 + edge - ((bx - lx) / sx) ** 2 - ((by - ly) / sy) ** 2) * 2, 0, 1)
        mix = _smooth_field(rng, bw, bh, 6)[..., None]
        color = lesion[0] * mix + lesion[1] * (1 - mix)
        spot = (spot * body[y0:y1, x0:x1])[..., None]
        image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - spot) + color * spot
    # Texture (pores, folds) and the fall-off of a flash.
    image *= 0.88 + 0.24 * _smooth_field(rng, lw, lh, max(6, lw // 5))[..., None]
    image += rng.standard_normal(image.shape, dtype=np.float32) * 6
    light = 1.1 - 0.5 * (((xx - lw / 2) / lw) ** 2 + ((yy - lh / 2) / lh) ** 2)
    image = np.clip(image * light[..., None], 0, 235)
    low = Image.fromarray(image.astype(np.uint8), "RGB")
    return low.resize((w, h), Image.Resampling.BILINEAR)


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, angle: float, n: int = 40):
    """The outline of a rotated ellipse as a polygon."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return list(zip((cx + x * c - y * s).tolist(), (cy + x * s + y * c).tolist(), strict=True))


def _scan(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A radiology image (axial CT, MRI, radiograph): a bright body outline with organ-like
    structures, in grayscale on black."""
    lw, lh = max(8, w // 4), max(8, h // 4)
    image = Image.new("L", (lw, lh), 0)
    draw = ImageDraw.Draw(image)
    cx, cy = lw * (0.38 + 0.24 * rng.random()), lh * (0.38 + 0.24 * rng.random())
    rx, ry = lw * (0.28 + 0.17 * rng.random()), lh * (0.3 + 0.17 * rng.random())
    tilt = rng.normal(0, 0.25)
    modality = int(rng.integers(3))
    body = _ellipse_points(cx, cy, rx * 0.9, ry * 0.9, tilt)
    draw.polygon(_ellipse_points(cx, cy, rx, ry, tilt), fill=int(200 + 40 * rng.random()))
    draw.polygon(body, fill=int(70 + 60 * rng.random()))  # soft tissue in a bright rim
    inside = Image.new("L", (lw, lh), 0)
    ImageDraw.Draw(inside).polygon(body, fill=255)
    # Organs, lungs, ventricles, bone; in a radiograph also ribs: kept within the body.
    parts, where = Image.new("L", (lw, lh), 0), Image.new("L", (lw, lh), 0)
    draw_parts, draw_where = ImageDraw.Draw(parts), ImageDraw.Draw(where)
    for _ in range(int(rng.integers(3, 9))):
        ox = cx + (rng.random() - 0.5) * rx * 1.2
        oy = cy + (rng.random() - 0.5) * ry * 1.2
        orx, ory = rx * (0.08 + 0.3 * rng.random()), ry * (0.08 + 0.3 * rng.random())
        outline = _ellipse_points(ox, oy, orx, ory, rng.random() * np.pi, 24)
        draw_parts.polygon(outline, fill=int(rng.choice((10, 40, 120, 160, 250))))
        draw_where.polygon(outline, fill=255)
    if modality == 2:
        xs = np.linspace(cx - rx, cx + rx, 16)
        for k in range(int(rng.integers(5, 10))):
            ys = cy - ry * 0.8 + k * ry * 0.2 + 0.15 * ((xs - cx) / rx) ** 2 * ry
            rib = list(zip(xs.tolist(), ys.tolist(), strict=True))
            width = max(1, int(ry * 0.06))
            draw_parts.line(rib, fill=225, width=width)
            draw_where.line(rib, fill=255, width=width)
    image.paste(parts, mask=ImageChops.multiply(where, inside))
    array = np.asarray(image.filter(ImageFilter.GaussianBlur(0.6 + rng.random())), np.float32)
    if modality == 1:  # MRI: tissue texture
        inner = np.asarray(inside) > 0
        array = array * np.where(inner, 0.7 + 0.6 * _smooth_field(rng, lw, lh, 10), 1.0)
    array += rng.standard_normal(array.shape, dtype=np.float32) * 6 * (array > 8)
    low = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
    return low.resize((w, h), Image.Resampling.BILINEAR).convert("RGB")


_BOX_COLORS = (
    (173, 216, 230),
    (255, 204, 153),
    (204, 235, 197),
    (255, 237, 160),
    (222, 203, 228),
    (251, 180, 174),
    (179, 205, 227),
)
_DIAGRAM_WORDS = (
    "Receptor",
    "Ligand",
    "Nucleus",
    "Transcription",
    "Apoptosis",
    "Proliferation",
    "Inflammation",
    "Screened",
    "Excluded",
    "Randomized",
    "Follow-up",
    "Analysis",
    "Control",
    "Treatment",
    # Genes, in the letters the default font has.
    *(gene for gene in _GENES if gene.isascii()),
)


def _arrow(draw: ImageDraw.ImageDraw, a, b, width: int, head: float) -> None:
    draw.line([a, b], fill=(40, 40, 40), width=width)
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = max(1e-6, (dx * dx + dy * dy) ** 0.5)
    ux, uy = dx / length, dy / length
    left = (b[0] - head * ux + head * 0.5 * uy, b[1] - head * uy - head * 0.5 * ux)
    right = (b[0] - head * ux - head * 0.5 * uy, b[1] - head * uy + head * 0.5 * ux)
    draw.polygon([b, left, right], fill=(40, 40, 40))


def _diagram(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A pathway or flowchart: coloured rounded boxes with labels, joined by arrows."""
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    cols, rows = int(rng.integers(1, 4)), int(rng.integers(2, 5))
    cw, ch = w / cols, h / rows
    font = _font(max(9, int(min(cw, ch) / 7)))
    if rng.random() < 0.4:  # a cell outline around the pathway
        draw.ellipse([w * 0.03, h * 0.03, w * 0.97, h * 0.97], outline=(120, 120, 160), width=3)
    boxes = []
    for r in range(rows):
        for c in range(cols):
            if rng.random() < 0.2 and boxes:
                continue
            bx = cw * (c + 0.5) + (rng.random() - 0.5) * cw * 0.2
            by = ch * (r + 0.5) + (rng.random() - 0.5) * ch * 0.15
            bw, bh = cw * (0.55 + 0.3 * rng.random()) / 2, ch * (0.35 + 0.2 * rng.random()) / 2
            boxes.append((bx, by, bw, bh))
    width, head = max(1, w // 300), max(5, min(w, h) / 40)
    for (ax, ay, aw, ah), (bx, by, bw, bh) in zip(boxes, boxes[1:], strict=False):
        dx, dy = bx - ax, by - ay
        # From edge to edge along the line between the centres.
        leave = min(aw / max(abs(dx), 1e-6), ah / max(abs(dy), 1e-6))
        reach = min(bw / max(abs(dx), 1e-6), bh / max(abs(dy), 1e-6))
        if leave + reach < 1:
            _arrow(
                draw,
                (ax + dx * leave, ay + dy * leave),
                (bx - dx * reach, by - dy * reach),
                width,
                head,
            )
    for bx, by, bw, bh in boxes:
        draw.rounded_rectangle(
            [bx - bw, by - bh, bx + bw, by + bh],
            radius=max(2, int(min(bw, bh) * 0.4)),
            fill=_BOX_COLORS[int(rng.integers(len(_BOX_COLORS)))],
            outline=(60, 60, 60),
            width=width,
        )
        label = _DIAGRAM_WORDS[int(rng.integers(len(_DIAGRAM_WORDS)))]
        draw.text((bx, by), label, fill=(0, 0, 0), font=font, anchor="mm")
    return image


# kind: (painter, weight in the mix). Plots are the most common figures in PMC; radiology
# scans the rarest here.
_PAINTERS = {
    "plot": (_plot, 30),
    "micrograph": (_micrograph, 22),
    "diagram": (_diagram, 14),
    "blot": (_blot, 11),
    "heatmap": (_heatmap, 9),
    "photograph": (_photograph, 8),
    "scan": (_scan, 6),
}
KINDS = tuple(_PAINTERS)
# What a PNG or TIFF holds: line art, not photographs.
FLAT_KINDS = ("plot", "diagram", "heatmap")


def paint(kind: str, rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """One panel of `kind` (one of KINDS), w x h pixels, drawn from `rng`."""
    return _PAINTERS[kind][0](rng, w, h)


def drawn_kind(seed: int, index: int, number: int, flat: bool) -> str:
    """The kind render_image draws for graphic `number` of article `index`: a pure function,
    drawn from the mix of KINDS (FLAT_KINDS where the file is a PNG or TIFF)."""
    kinds = FLAT_KINDS if flat else KINDS
    weights = [_PAINTERS[k][1] for k in kinds]
    pick = random.Random(f"kind:{seed}:{index}:{number}").random() * sum(weights)
    for kind, weight in zip(kinds, weights, strict=True):
        pick -= weight
        if pick < 0:
            return kind
    return kinds[-1]


def _panel_letter(image: Image.Image, letter: str, x: int, y: int) -> None:
    draw = ImageDraw.Draw(image)
    size = max(12, image.height // 16)
    draw.text(
        (x + size // 3, y + size // 4),
        letter,
        fill=(0, 0, 0),
        font=_font(size),
        stroke_width=max(1, size // 12),
        stroke_fill=(255, 255, 255),
    )


def render_image(seed: int, index: int, number: int, image_side: int, flat: bool) -> Image.Image:
    """The picture of one graphic, a pure function of (seed, article index, graphic number):
    one kind (drawn_kind) in every panel, panels lettered A-D."""
    rng = np.random.default_rng([seed, index, number])
    paint = _PAINTERS[drawn_kind(seed, index, number, flat)][0]
    w = image_side
    h = max(24, int(image_side * (0.6 + 0.4 * rng.random())))
    panels = int(rng.choice([1, 1, 2, 2, 4]))
    if panels == 1 or w < 200:
        return paint(rng, w, h)
    image = Image.new("RGB", (w, h), (255, 255, 255))
    cols = 2
    rows = panels // cols
    pw, ph = w // cols, h // rows
    for p in range(panels):
        x, y = (p % cols) * pw, (p // cols) * ph
        image.paste(paint(rng, pw, ph), (x, y))
        _panel_letter(image, "ABCD"[p], x, y)
    return image


def _encode(image: Image.Image, fmt: str, quality: int = 85) -> tuple[bytes, str]:
    out = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(out, "JPEG", quality=quality)
        return out.getvalue(), ".jpg"
    if fmt == "gray":
        image.convert("L").save(out, "JPEG", quality=quality)
        return out.getvalue(), ".jpg"
    if fmt == "png":
        image.save(out, "PNG", compress_level=3)
        return out.getvalue(), ".png"
    if fmt == "tiff":
        image.save(out, "TIFF", compression="tiff_adobe_deflate")
        return _zero_tiff_padding(out.getvalue()), ".tif"
    raise ValueError(fmt)


def _zero_tiff_padding(data: bytes) -> bytes:
    """libtiff leaves the alignment byte after the last strip uninitialized: zero it."""
    tiff = Image.open(io.BytesIO(data))
    offsets, counts = tiff.tag_v2.get(273, ()), tiff.tag_v2.get(279, ())
    order = "little" if data[:2] == b"II" else "big"
    ifd = int.from_bytes(data[4:8], order)
    end = max((o + c for o, c in zip(offsets, counts, strict=False)), default=ifd)
    if 0 < ifd - end <= 8:
        data = data[:end] + bytes(ifd - end) + data[ifd:]
    return data


def thumbnail_gif(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """PMC's thumbnail: the same picture as a GIF, the longer side at most `side` pixels."""
    small = image
    while max(small.size) >= 4 * side:
        small = small.reduce(2)
    scale = side / max(small.size)
    size = (max(1, round(small.width * scale)), max(1, round(small.height * scale)))
    small = small.resize(size, Image.Resampling.BILINEAR)
    if small.mode == "L":
        paletted = small
    else:
        paletted = small.convert("RGB").quantize(64, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    paletted.save(out, "GIF")
    return out.getvalue()


def _inline_gif(seed: int, index: int) -> bytes:
    rng = np.random.default_rng([seed, index, 999])
    image = Image.new("L", (48, 18), 255)
    draw = ImageDraw.Draw(image)
    draw.text((2, 2), f"{chr(945 + int(rng.integers(20)))}{int(rng.integers(2, 9))}", fill=0)
    out = io.BytesIO()
    image.save(out, "GIF")
    return out.getvalue()


def _eligible_sources(plan: ArticlePlan) -> list[GraphicSpec]:
    return [
        f.graphics[0]
        for f in plan.figures
        if f.kind == "fig"
        and len(f.graphics) == 1
        and f.graphics[0].fmt == "jpeg"
        and f.graphics[0].dup is None
        and not f.graphics[0].alternatives
    ]


def _is_flat(graphic: GraphicSpec) -> bool:
    return graphic.fmt in ("png", "tiff")


def _original(seed: int, plan: ArticlePlan, graphic: GraphicSpec, side: int):
    image = render_image(seed, plan.index, graphic.number, side, flat=_is_flat(graphic))
    data, ext = _encode(image, graphic.fmt)
    return image, data, ext


def _drawn_from(
    seed: int, plan: ArticlePlan, graphic: GraphicSpec, start_pmcid: int = 9_000_001
) -> tuple[ArticlePlan, GraphicSpec]:
    """The (article, graphic) whose picture a graphic's file shows: the source of a
    duplicate, the graphic itself otherwise."""
    if graphic.dup:
        source_plan = plan_article(seed, graphic.dup_source, start_pmcid)
        sources = _eligible_sources(source_plan)
        if sources:
            return source_plan, sources[int(graphic.dup_pick * len(sources))]
    return plan, graphic


def article_kinds(seed: int, plan: ArticlePlan) -> dict[int, str]:
    """{graphic number: kind} of an article's graphics, as their files show them (a
    duplicate shows its source's kind)."""
    kinds = {}
    for fig in plan.figures:
        for graphic in fig.graphics:
            source_plan, source = _drawn_from(seed, plan, graphic)
            kinds[graphic.number] = drawn_kind(
                seed, source_plan.index, source.number, _is_flat(source)
            )
    return kinds


def graphic_kind(seed: int, index: int, number: int) -> str:
    """The kind (one of KINDS) of graphic `number` (1-based, in document order) of article
    `index` of the corpus made with `seed`: what its file shows, a pure function of the
    three (the start PMCID and image side change neither)."""
    kinds = article_kinds(seed, plan_article(seed, index))
    if number not in kinds:
        raise ValueError(f"article {index} has no graphic {number} (it has {len(kinds)})")
    return kinds[number]


def render_graphic(
    seed: int, plan: ArticlePlan, graphic: GraphicSpec, side: int, start_pmcid: int
) -> tuple[Image.Image, bytes, str, dict | None]:
    """(picture, file bytes, extension, duplicate record or None) for one graphic."""
    source_plan, source = _drawn_from(seed, plan, graphic, start_pmcid)
    if source is not graphic:
        image, data, ext = _original(seed, source_plan, source, side)
        record = {
            "kind": graphic.dup,
            "copies": f"{source_plan.pmcid}.1/{source.stem}{ext}",
            "source_pmcid": source_plan.pmcid,
        }
        if graphic.dup == "exact":
            return image, data, ext, record
        rng = random.Random(f"{seed}:{plan.index}:{graphic.number}:near")
        if rng.random() < 0.5:
            quality = rng.choice((60, 70, 95))
            record["change"] = f"re-encoded at JPEG quality {quality}"
            data, ext = _encode(image, "jpeg", quality)
        else:
            factor = rng.uniform(0.92, 0.97)
            size = (max(24, round(image.width * factor)), max(24, round(image.height * factor)))
            image = image.resize(size, Image.Resampling.BILINEAR)
            record["change"] = f"resized to {size[0]}x{size[1]}"
            data, ext = _encode(image, "jpeg", 85)
        return image, data, ext, record
    image, data, ext = _original(seed, plan, graphic, side)
    return image, data, ext, None


# ---- text and XML --------------------------------------------------------------------------


class _Text:
    def __init__(self, seed: int):
        self.seed = seed
        self.rng = random.Random(seed)

    def pick(self, words):
        return words[self.rng.randrange(len(words))]

    def sentence(self) -> str:
        r = self.rng
        n = r.choice((3, 4, 5, 6, 8, 10, 12))
        p = r.choice(("0.05", "0.01", "0.001"))
        templates = (
            f"{self.pick(_TREATMENTS).capitalize()} {self.pick(_VERBS)} {self.pick(_GENES)} "
            f"{self.pick(_NOUNS)} in {self.pick(_CELLS)} (n = {n}, p &lt; {p}).",
            f"Using {self.pick(_METHODS)}, we examined {self.pick(_NOUNS)} of {self.pick(_GENES)} "
            f"in the {self.pick(_TISSUES)} of mice with {self.pick(_DISEASES)}.",
            f"Loss of {self.pick(_GENES)} {self.pick(_VERBS)} {self.pick(_NOUNS)} and "
            f"{self.pick(_NOUNS)} in {self.pick(_CELLS)}.",
            f"These findings suggest that {self.pick(_GENES)} links {self.pick(_NOUNS)} to the "
            f"progression of {self.pick(_DISEASES)}.",
            f"{self.pick(_GENES)} levels in the {self.pick(_TISSUES)} correlated with "
            f"{self.pick(_NOUNS)} (r = 0.{r.randint(30, 95)}).",
            f"Samples were analysed by {self.pick(_METHODS)} after {r.randint(6, 72)} h of "
            f"exposure to {self.pick(_TREATMENTS)}.",
            f"Compared with controls, {self.pick(_CELLS)} showed a "
            f"{r.randint(2, 9)}.{r.randint(0, 9)}-fold change in {self.pick(_GENES)} "
            f"{self.pick(_NOUNS)}.",
        )
        return self.pick(templates)

    def sentences(self, low: int, high: int) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(low, high)))

    def title(self) -> str:
        return (
            f"{self.pick(_GENES)} {self.pick(_NOUNS)} "
            f"{self.pick(('drives', 'modulates', 'protects against', 'predicts'))} "
            f"{self.pick(_DISEASES)} in {self.pick(_CELLS)}"
        )

    def caption_title(self) -> str:
        return (
            f"{self.pick(_GENES)} {self.pick(_NOUNS)} in {self.pick(_CELLS)} "
            f"treated with {self.pick(_TREATMENTS)}."
        )


def _xlink(href: str, tag: str = "graphic", extra: str = "") -> str:
    return f'<{tag}{extra} xlink:href="{escape(href)}"/>'


_MATH = (
    '<inline-formula><mml:math id="M{n}"><mml:msup><mml:mi>x</mml:mi><mml:mn>2</mml:mn>'
    "</mml:msup></mml:math></inline-formula>"
)


# How captions name each kind (filled from the article's vocabulary). Most captions say what
# their figure shows (KIND_CAPTION_SHARE); the rest stay generic, as many real ones do.
KIND_CAPTION_SHARE = 0.8
_KIND_TITLES = {
    "micrograph": (
        "Representative H&E-stained sections of the {tissue} in mice with {disease}.",
        "Confocal immunofluorescence images of {gene} in {cells} treated with {treatment}.",
        "Immunohistochemical (IHC) staining of {gene} in human {disease} tissue.",
        "Fluorescence microscopy of {cells} stained for {gene} (green) and DAPI (blue).",
        "Light micrographs of {tissue} sections from {disease} patients.",
    ),
    "blot": (
        "Western blot analysis of {gene} {noun} in {cells} treated with {treatment}.",
        "Immunoblot of {gene} and phospho-{gene} in {cells}; GAPDH served as loading control.",
        "Representative western blots (WB) of {gene} in the {tissue} of mice with {disease}.",
        "Agarose gel electrophoresis of RT-PCR products for {gene} in {cells}.",
    ),
    "plot": (
        "Bar plot of {gene} {noun} in {cells} (mean ± SD, n = {n}).",
        "Kaplan-Meier survival curves of patients with {disease} stratified by {gene} "
        "expression (log-rank p = 0.0{n}).",
        "ROC curve of {gene} for the diagnosis of {disease} (AUC = 0.{r}).",
        "Line plot of {gene} {noun} over time in {cells} treated with {treatment}.",
        "Scatter plot of {gene} versus {gene2} expression in the {tissue} (r = 0.{r}).",
        "Dose-response curves of {cells} exposed to {treatment}.",
    ),
    "heatmap": (
        "Heatmap of differentially expressed genes in {cells} treated with {treatment}.",
        "Hierarchical clustering heat map of {gene} target genes in {disease}.",
        "Heatmap showing z-scored expression of the top {n}0 DEGs (RNA-seq) in the {tissue}.",
    ),
    "photograph": (
        "Clinical photograph of the lesion before treatment with {treatment}.",
        "Photograph of the lesion on the {tissue} of a patient with {disease}.",
        "Gross photograph of the resected {tissue} specimen.",
        "Representative photographs of dorsal skin wounds in mice at day {n}.",
    ),
    "scan": (
        "Axial CT of the chest showing {disease}-related changes (arrow).",
        "T2-weighted MRI of the brain showing a hyperintense lesion (arrowhead).",
        "Chest X-ray of a patient with {disease} showing bilateral infiltrates.",
        "Contrast-enhanced CT (CECT) of the abdomen at diagnosis and after {treatment}.",
        "Coronal T1-weighted MR images of the {tissue} in patients with {disease}.",
    ),
    "diagram": (
        "Schematic diagram of the proposed mechanism by which {gene} regulates {noun}.",
        "Proposed {gene} signaling pathway in {cells}.",
        "Flowchart of the study design and patient selection.",
        "Schematic illustration of the experimental workflow.",
    ),
}
# A second sentence some kinds' captions carry.
_KIND_NOTES = {
    "micrograph": ("Scale bar, {n}0 μm.", "Scale bars: {n}0 μm.", "Magnification, ×{n}00."),
    "blot": ("Densitometry is shown below the blots.", "β-actin was used as loading control."),
    "plot": ("Data are mean ± SEM.", "Error bars, SD; *p < 0.05."),
    "heatmap": ("Rows are genes, columns samples; colour shows the z-score.",),
    "photograph": ("Arrows mark the lesion margin.",),
    "scan": ("Arrows indicate the lesion.", "R, right; L, left."),
    "diagram": ("Arrows indicate activation.", "Created with BioRender."),
}


def _kind_title(seed: str, kind: str) -> str | None:
    """A caption title naming `kind`, or None for a generic one: drawn from its own
    generator, so the rest of the article's text is the same whether it speaks or not."""
    rng = random.Random(seed)
    if kind not in _KIND_TITLES or rng.random() >= KIND_CAPTION_SHARE:
        return None

    def pick(words):
        return words[rng.randrange(len(words))]

    words = {
        "gene": pick(_GENES),
        "gene2": pick(_GENES),
        "noun": pick(_NOUNS),
        "cells": pick(_CELLS),
        "tissue": pick(_TISSUES),
        "disease": pick(_DISEASES),
        "treatment": pick(_TREATMENTS),
        "n": rng.randint(2, 9),
        "r": rng.randint(60, 97),
    }
    title = pick(_KIND_TITLES[kind]).format(**words)
    if rng.random() < 0.6:
        title += " " + pick(_KIND_NOTES[kind]).format(**words)
    return escape(title)


def _caption(text: _Text, fig: FigureSpec, kind: str | None = None) -> str:
    title = text.caption_title()
    if kind is not None:
        title = _kind_title(f"{text.seed}:{fig.fig_id}:kind", kind) or title
    parts = [f"<title>{title}</title>"]
    panels = "ABCD"[: text.rng.randint(1, 4)]
    detail = " ".join(f"({p}) {text.sentence()}" for p in panels)
    if fig.mathml:
        detail += f" The fit follows {_MATH.format(n=fig.fig_id)} scaling."
    parts.append(f"<p>{detail}</p>")
    if fig.list_caption:
        items = "".join(f"<list-item><p>{text.sentence()}</p></list-item>" for _ in range(3))
        parts.append(f'<p>Panels show:</p><list list-type="bullet">{items}</list>')
        parts.append(
            f"<p>Scale bar, {text.rng.choice((10, 20, 50, 100))} μm. Data are mean ± SD.</p>"
        )
    return "<caption>" + "".join(parts) + "</caption>"


def _fig_xml(text: _Text, fig: FigureSpec, kinds: dict[int, str]) -> str:
    graphics = []
    for graphic in fig.graphics:
        if graphic.alternatives:
            graphics.append(
                "<alternatives>"
                + _xlink(graphic.href)
                + _xlink(f"{graphic.stem}.gif", extra=' specific-use="thumbnail"')
                + "</alternatives>"
            )
        else:
            graphics.append(_xlink(graphic.href))
    if fig.kind == "table":
        return (
            f'<table-wrap id="{fig.fig_id}" position="float"><label>{fig.label}</label>'
            f"{_caption(text, fig)}{''.join(graphics)}</table-wrap>"
        )
    return (
        f'<fig id="{fig.fig_id}" position="float"><label>{fig.label}</label>'
        f"{_caption(text, fig, kinds.get(fig.graphics[0].number))}{''.join(graphics)}</fig>"
    )


def _xref(rid: str, label: str, kind: str = "fig") -> str:
    return f'<xref ref-type="{kind}" rid="{rid}">{label}</xref>'


def _results(text: _Text, plan: ArticlePlan, kinds: dict[int, str]) -> tuple[list[str], list[str]]:
    """(paragraphs citing the figures, float XML) for the Results section."""
    figs = [f for f in plan.figures if f.kind == "fig"]
    n = len(figs)
    cites: list[str] = [f"({_xref('F1', 'Figure 1')})"]
    if n >= 2:
        cites.append(f"({_xref('F1 F2', 'Figures 1 and 2')})")
        cites.append(f"({_xref('F2', 'Figure 2A')})")
    if n >= 3:
        cites.append(f"({_xref('F1', 'Figures 1')}–{_xref('F3', '3')})")
    for k in range(4, n + 1):
        cites.append(f"({_xref(f'F{k}', f'Figure {k}')})")
    if any(f.group for f in figs):
        cites.append(f"({_xref('FG1', 'Figures 2 and 3')})")
    if any(f.kind == "table" for f in plan.figures):
        cites.append(f"({_xref('T1', 'Table 1', 'table')})")
    paragraphs = []
    for cite in cites:
        paragraphs.append(f"{text.sentences(1, 2)[:-1]} {cite}. {text.sentences(1, 2)}")
    floats = []
    group: list[str] = []
    for fig in plan.figures:
        xml = _fig_xml(text, fig, kinds)
        if fig.group:
            group.append(xml)
            continue
        if group:
            floats.append(_group_xml(text, group))
            group = []
        floats.append(xml)
    if group:
        floats.append(_group_xml(text, group))
    return paragraphs, floats


def _group_xml(text: _Text, figs: list[str]) -> str:
    return (
        f'<fig-group id="FG1"><caption><title>{text.caption_title()}</title></caption>'
        f"{''.join(figs)}</fig-group>"
    )


def _refs(text: _Text, plan: ArticlePlan) -> list[str]:
    refs = []
    for r in range(1, text.rng.randint(5, 15) + 1):
        authors = "".join(
            f"<name><surname>{text.pick(_SURNAMES)}</surname><given-names>{text.pick(_GIVEN)}"
            "</given-names></name>"
            for _ in range(text.rng.randint(1, 4))
        )
        year = text.rng.randint(1995, 2022)
        ids = ""
        roll = text.rng.random()
        if roll < 0.7:
            ids += f'<pub-id pub-id-type="pmid">{text.rng.randint(8_000_000, 36_000_000)}</pub-id>'
        if roll > 0.15:
            suffix = text.rng.randint(100, 99999)
            ids += f'<pub-id pub-id-type="doi">10.5555/ref.{year}.{suffix}</pub-id>'
        fpage = text.rng.randint(1, 900)
        refs.append(
            f'<ref id="R{r}"><label>{r}</label><element-citation publication-type="journal">'
            f'<person-group person-group-type="author">{authors}</person-group>'
            f"<article-title>{text.title()}</article-title>"
            f"<source>{text.pick(_JOURNALS)[1]}</source><year>{year}</year>"
            f"<volume>{text.rng.randint(1, 60)}</volume><fpage>{fpage}</fpage>"
            f"<lpage>{fpage + text.rng.randint(3, 15)}</lpage>{ids}</element-citation></ref>"
        )
    return refs


@dataclass
class ArticleText:
    title: str
    abstract: list[str]
    keywords: list[str]
    subject: str
    sections: list[tuple[str, list[str], list[str]]]  # title, paragraphs, floats
    refs: list[str]
    authors: list[tuple[str, str]]


def _article_text(plan: ArticlePlan, kinds: dict[int, str] | None = None) -> ArticleText:
    """The text of an article; a figure's caption names its first graphic's kind (`kinds`,
    by graphic number) most of the time."""
    text = _Text(plan.text_seed)
    title = text.title()
    abstract = [text.sentences(2, 4) for _ in range(text.rng.randint(1, 3))]
    keywords = sorted({text.pick(_GENES) for _ in range(4)} | {text.pick(_DISEASES)})
    subject = text.pick(_SUBJECTS)
    authors = [
        (text.pick(_SURNAMES), text.pick(_GIVEN) + text.pick(_GIVEN))
        for _ in range(text.rng.randint(1, 6))
    ]
    sections = []
    for name in _SECTIONS:
        if name == "Results":
            paragraphs, floats = _results(text, plan, kinds or {})
        else:
            paragraphs = [text.sentences(2, 5) for _ in range(text.rng.randint(1, 3))]
            floats = []
            if name == "Introduction":
                paragraphs[0] += f" Earlier work {_xref('R1', '1', 'bibr')}."
            if name == "Materials and methods" and plan.inline_graphic:
                paragraphs.append(
                    f"The probe {_xlink(f'{plan.pmcid}-i001', 'inline-graphic')} was "
                    f"used at {text.rng.randint(1, 20)} μM. {text.sentence()}"
                )
        sections.append((name, paragraphs, floats))
    return ArticleText(title, abstract, keywords, subject, sections, _refs(text, plan), authors)


def _citation(plan: ArticlePlan) -> str:
    d = plan.published
    return (
        f"{plan.journal[1]}. {d.year} {_MONTHS[d.month - 1]} {d.day}; "
        f"{d.year - 2010}({d.month}):e{100 + plan.index % 900}"
    )


def _version_title(plan: ArticlePlan, content: ArticleText, version: int) -> str:
    return content.title if version == 1 else content.title + ": an updated analysis"


def article_xml(plan: ArticlePlan, content: ArticleText, version: int) -> bytes:
    lic_url, lic_text = LICENSES[plan.license_code]
    title = _version_title(plan, content, version)
    d = plan.published
    ns = f' xmlns="{_JATS_NS}"' if plan.default_ns else ""
    pi = "<?properties open_access?>" if plan.pis else ""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    if plan.doctype:
        lines.append(_DOCTYPE)
    if plan.pis:
        lines.append("<?covid-19-tdm?>")
    contribs = "".join(
        f'<contrib contrib-type="author"><name><surname>{s}</surname>'
        f"<given-names>{g}</given-names></name></contrib>"
        for s, g in content.authors
    )
    if lic_url:
        license_xml = (
            f'<license xlink:href="{lic_url}"><license-p>This is an open access article '
            f"distributed under the Creative Commons {lic_text} license.</license-p>"
            "</license>"
        )
    else:
        license_xml = f"<license><license-p>This article is {lic_text}.</license-p></license>"
    abstract = "".join(f"<p>{p}</p>" for p in content.abstract)
    kwds = "".join(f"<kwd>{k}</kwd>" for k in content.keywords)
    body = []
    for n, (name, paragraphs, floats) in enumerate(content.sections, 1):
        inner = "".join(f"<p>{p}</p>" for p in paragraphs) + "".join(floats)
        body.append(f'<sec id="s{n}"><title>{name}</title>{inner}</sec>')
    journal = plan.journal
    lines.append(
        f'<article{ns} xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xmlns:mml="http://www.w3.org/1998/Math/MathML" dtd-version="1.3" '
        'article-type="research-article" xml:lang="en">'
        f"<front>{pi}<journal-meta>"
        f'<journal-id journal-id-type="nlm-ta">{journal[1]}</journal-id>'
        f'<journal-id journal-id-type="iso-abbrev">{journal[1]}</journal-id>'
        f"<journal-title-group><journal-title>{journal[0]}</journal-title></journal-title-group>"
        f'<issn pub-type="epub">{journal[2]}</issn>'
        f"<publisher><publisher-name>{journal[3]}</publisher-name></publisher></journal-meta>"
        "<article-meta>"
        f'<article-id pub-id-type="pmid">{plan.pmid}</article-id>'
        f'<article-id pub-id-type="pmcid">{plan.pmcid}</article-id>'
        f'<article-id pub-id-type="pmcid-ver">{plan.pmcid}.{version}</article-id>'
        f'<article-id pub-id-type="doi">{_doi(plan)}</article-id>'
        '<article-categories><subj-group subj-group-type="heading">'
        f"<subject>{content.subject}</subject></subj-group></article-categories>"
        f"<title-group><article-title>{title}</article-title></title-group>"
        f"<contrib-group>{contribs}</contrib-group>"
        f'<pub-date pub-type="epub"><day>{d.day}</day><month>{d.month}</month>'
        f"<year>{d.year}</year></pub-date>"
        f"<volume>{d.year - 2010}</volume><issue>{d.month}</issue>"
        f"<elocation-id>e{100 + plan.index % 900}</elocation-id>"
        f"<permissions><copyright-statement>© {d.year} The Authors</copyright-statement>"
        f"<copyright-year>{d.year}</copyright-year>{license_xml}</permissions>"
        f"<abstract>{abstract}</abstract>"
        f'<kwd-group kwd-group-type="author">{kwds}</kwd-group>'
        "</article-meta></front>"
        f"<body>{''.join(body)}</body>"
        f"<back><ref-list><title>References</title>{''.join(content.refs)}</ref-list></back>"
        "</article>"
    )
    return ("\n".join(lines) + "\n").encode("utf-8")


def _doi(plan: ArticlePlan) -> str:
    return f"10.5555/{plan.journal[1].lower().replace(' ', '')}.{plan.published.year}.{plan.index}"


def _plain(markup: str) -> str:
    text = re.sub(r"<[^>]+>", "", markup)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def article_txt(plan: ArticlePlan, content: ArticleText, version: int) -> bytes:
    parts = [_version_title(plan, content, version), "", "Abstract"]
    parts += [_plain(p) for p in content.abstract]
    for name, paragraphs, _ in content.sections:
        parts += ["", name] + [_plain(p) for p in paragraphs]
    return ("\n".join(parts) + "\n").encode("utf-8")


# ---- one article, all of its versions ------------------------------------------------------


def _s3(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


def _iso_ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def build_article(index: int, output: str, seed: int, image_side: int, start_pmcid: int) -> dict:
    """Write every file of one article; return what the inventory and summary need."""
    plan = plan_article(seed, index, start_pmcid)
    kinds = article_kinds(seed, plan)
    content = _article_text(plan, kinds)
    media: dict[str, bytes] = {}
    stats: Counter = Counter()
    duplicates = []
    file_kinds: dict[str, str] = {}
    for fig in plan.figures:
        for graphic in fig.graphics:
            image, data, ext, dup = render_graphic(seed, plan, graphic, image_side, start_pmcid)
            media[f"{graphic.stem}{ext}"] = data
            file_kinds[f"{graphic.stem}{ext}"] = kinds[graphic.number]
            media[f"{graphic.stem}.gif"] = thumbnail_gif(image)
            if graphic.fmt == "gray" and not dup:
                stats["images_gray_jpeg"] += 1
            else:
                stats[f"images_{'jpeg' if ext == '.jpg' else ext[1:]}"] += 1
            if dup:
                stats[f"{dup['kind']}_duplicates"] += 1
                dup["file"] = f"{graphic.stem}{ext}"
                dup["figure_id"] = fig.fig_id
                dup["pmcid"] = plan.pmcid
                duplicates.append(dup)
    if plan.inline_graphic:
        media[f"{plan.pmcid}-i001.gif"] = _inline_gif(seed, index)
    names = sorted(media)
    medline = sample_medline.article_medline(seed, _citation_of(plan, content, kinds))
    rows = []
    candidates = sum(len(f.graphics) for f in plan.figures)
    for version in range(1, plan.versions + 1):
        folder = f"{plan.pmcid}.{version}"
        xml_key = f"{folder}/{folder}.xml"
        txt_key = f"{folder}/{folder}.txt"
        storage.write_bytes(storage.join(output, xml_key), article_xml(plan, content, version))
        storage.write_bytes(storage.join(output, txt_key), article_txt(plan, content, version))
        for name in names:
            storage.write_bytes(storage.join(output, folder, name), media[name])
        metadata = {
            "pmcid": plan.pmcid,
            "version": version,
            "pmid": plan.pmid,
            "doi": _doi(plan),
            "mid": None,
            "title": _plain(_version_title(plan, content, version)),
            "citation": _citation(plan),
            "is_pmc_openaccess": plan.open_access,
            "is_manuscript": False,
            "is_historical_ocr": False,
            "is_retracted": plan.retracted,
            "license_code": plan.license_code,
            "xml_url": _s3(xml_key),
            "text_url": _s3(txt_key),
            "pdf_url": None,
            "media_urls": [_s3(f"{folder}/{name}") for name in names],
        }
        meta_bytes = (json.dumps(metadata, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        meta_key = f"metadata/{folder}.json"
        storage.write_bytes(storage.join(output, meta_key), meta_bytes)
        rows.append(
            {
                "key": meta_key,
                "size": len(meta_bytes),
                "last_modified": _iso_ms(plan.modified[version - 1]),
                "etag": hashlib.md5(meta_bytes).hexdigest(),
            }
        )
    return {
        "index": index,
        "pmcid": plan.pmcid,
        "versions": plan.versions,
        "figures": candidates,
        "license": plan.license_code,
        "retracted": plan.retracted,
        "open_access": plan.open_access,
        "features": plan.features,
        "stats": dict(stats),
        "kinds": dict(Counter(file_kinds.values())),
        "figure_kinds": {
            figure_kind_key(plan.pmcid, version, name): kind
            for version in range(1, plan.versions + 1)
            for name, kind in file_kinds.items()
        },
        "thumbnails": candidates,
        "bytes": sum(len(v) for v in media.values()) * plan.versions,
        "duplicates": [
            dict(d, folders=[f"{plan.pmcid}.{v}" for v in range(1, plan.versions + 1)])
            for d in duplicates
        ],
        "rows": rows,
        "medline": medline,
    }


def _citation_of(plan: ArticlePlan, content: ArticleText, kinds: dict[int, str]):
    """What the article's PubMed record says of it: its first version's text."""
    return sample_medline.ArticleCitation(
        index=plan.index,
        pmid=plan.pmid,
        pmcid=plan.pmcid,
        doi=_doi(plan),
        title=_plain(content.title),
        abstract=tuple(_plain(p) for p in content.abstract),
        keywords=tuple(content.keywords),
        journal=plan.journal,
        published=plan.published,
        authors=tuple(content.authors),
        kinds=tuple(kinds[n] for n in sorted(kinds)),
        retracted=plan.retracted,
    )


# ---- what the corpus manifest says about figure kinds ----------------------------------------


def figure_kind_key(pmcid: str, version: int, file_name: str) -> str:
    """The key of a graphic file in the manifest's `figure_kinds`: "PMC9000001.1/<file name>"
    (an extract row's article_accession_id, article_version and image_file_name)."""
    return f"{pmcid}.{version}/{file_name}"


def figure_kinds(manifest: dict) -> dict[str, str]:
    """{figure_kind_key: kind} of every graphic file of every article version of a corpus,
    from its manifest (the parsed MANIFEST_NAME JSON); duplicates carry their source's kind."""
    return dict(manifest.get("figure_kinds", {}))


def row_kind(kinds: dict[str, str], row: dict) -> str | None:
    """The kind of an extract figure row's image (None for a file the corpus did not make)."""
    key = figure_kind_key(
        row["article_accession_id"], row["article_version"], row["image_file_name"]
    )
    return kinds.get(key)


# ---- the inventory and the whole corpus ----------------------------------------------------


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def write_inventory(output: str, rows: list[dict], seed: int, split: bool) -> dict:
    """An S3 inventory (CSV, gzip) of the metadata JSON files; returns its manifest."""
    rows = sorted(rows, key=lambda r: r["key"])
    half = (len(rows) + 1) // 2
    parts = [rows[:half], rows[half:]] if split else [rows]
    files = []
    for n, part in enumerate(parts):
        text = "".join(
            ",".join(
                _csv_field(v)
                for v in (BUCKET, r["key"], str(r["size"]), r["last_modified"], f'"{r["etag"]}"')
            )
            + "\n"
            for r in part
        )
        data = gzip.compress(text.encode("utf-8"), mtime=0)
        name = uuid.UUID(hashlib.md5(f"inventory:{seed}:{n}:{len(rows)}".encode()).hexdigest())
        key = f"{INVENTORY_PREFIX}/data/{name}.csv.gz"
        storage.write_bytes(storage.join(output, key), data)
        files.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest = {
        "sourceBucket": BUCKET,
        "destinationBucket": f"arn:aws:s3:::{BUCKET}",
        "version": "2016-11-30",
        "creationTimestamp": str(_INVENTORY_MS),
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
        "files": files,
    }
    data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    storage.write_bytes(storage.join(output, INVENTORY_MANIFEST), data)
    checksum = INVENTORY_MANIFEST.rsplit("/", 1)[0] + "/manifest.checksum"
    storage.write_bytes(storage.join(output, checksum), hashlib.md5(data).hexdigest().encode())
    return manifest


def generate_corpus(
    output: str,
    articles: int,
    seed: int = 0,
    image_side: int = 1000,
    start_pmcid: int = 9_000_001,
    workers: int = 1,
) -> dict:
    """Write a synthetic PMC Cloud corpus of `articles` articles under `output`; a summary."""
    if articles < 0:
        raise ValueError("articles must be >= 0")
    if image_side < 32:
        raise ValueError("image_side must be >= 32")
    build = partial(
        build_article, output=output, seed=seed, image_side=image_side, start_pmcid=start_pmcid
    )
    medline = sample_medline.MedlineWriter()

    def collect(built) -> list[dict]:
        # Each article's PubMed XML goes into the compressed files as it comes: not held.
        kept = []
        for result in built:
            medline.add(result.pop("medline"))
            kept.append(result)
        return kept

    if workers > 1 and articles > 1:
        import multiprocessing

        with multiprocessing.get_context().Pool(workers) as pool:
            results = collect(pool.imap(build, range(articles), chunksize=4))
    else:
        results = collect(build(i) for i in range(articles))

    rows = [row for r in results for row in r["rows"]]
    manifest = write_inventory(output, rows, seed, split=articles > 10)
    pubmed = medline.write(output)
    stats: Counter = Counter()
    features: Counter = Counter()
    licenses: Counter = Counter()
    for r in results:
        stats.update(r["stats"])
        features.update(r["features"])
        licenses[r["license"]] += 1
    duplicates = [d for r in results for d in r["duplicates"]]
    kinds: Counter = Counter()
    for r in results:
        kinds.update(r["kinds"])
    dates = sorted(row["last_modified"] for row in rows)
    summary = {
        "articles": articles,
        "versions": len(rows),
        "articles_with_two_versions": sum(1 for r in results if r["versions"] == 2),
        "figures": sum(r["figures"] for r in results),
        "graphic_candidates_all_versions": sum(r["figures"] * r["versions"] for r in results),
        "images_by_format": {
            k[len("images_") :]: v for k, v in sorted(stats.items()) if k.startswith("images_")
        },
        "thumbnails": sum(r["thumbnails"] for r in results),
        "inline_graphics": features["inline_graphic"],
        "graphic_kinds": {k: kinds[k] for k in KINDS if kinds[k]},
        "exact_duplicates": stats["exact_duplicates"],
        "near_duplicates": stats["near_duplicates"],
        "retracted": sum(1 for r in results if r["retracted"]),
        "not_open_access": sum(1 for r in results if not r["open_access"]),
        "licenses": dict(sorted(licenses.items())),
        "features": dict(sorted(features.items())),
        "last_modified_range": [dates[0], dates[-1]] if dates else [],
        "media_bytes": sum(r["bytes"] for r in results),
        "inventory_manifest": INVENTORY_MANIFEST,
        "inventory_files": [f["key"] for f in manifest["files"]],
        "pubmed": pubmed,
        "seed": seed,
        "image_side": image_side,
        "start_pmcid": start_pmcid,
    }
    sample_manifest = {
        "summary": summary,
        "duplicates": duplicates,
        "figure_kinds": dict(sorted(kv for r in results for kv in r["figure_kinds"].items())),
        "pubmed": medline.entries,
    }
    storage.write_bytes(
        storage.join(output, MANIFEST_NAME),
        (json.dumps(sample_manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    )
    return summary
