"""The sample corpus draws each graphic as one kind a user would name, says so in most
captions, and lists every graphic file's kind in its manifest."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from conftest import read_table, run_extract

from transforms.pmc import sample_corpus as sc

SEED = 4
# Words a caption uses for each kind (its title names it when it speaks of it).
CUES = {
    "micrograph": ("H&E", "immunofluorescence", "IHC", "microscopy", "micrograph"),
    "blot": ("Western blot", "western blot", "Immunoblot", "gel electrophoresis"),
    "plot": ("plot", "Kaplan-Meier", "ROC curve", "curves"),
    "heatmap": ("heatmap", "heat map", "Heatmap"),
    "photograph": ("photograph",),
    "scan": ("CT", "MRI", "MR images", "X-ray"),
    "diagram": ("Schematic", "pathway", "Flowchart"),
}


def test_kinds_are_pure_and_mixed_as_in_the_literature():
    assert set(sc.KINDS) == set(CUES) and set(sc.FLAT_KINDS) == {"plot", "heatmap", "diagram"}
    drawn = Counter(sc.drawn_kind(SEED, i, n, False) for i in range(3000) for n in range(1, 6))
    order = [kind for kind, _ in drawn.most_common()]
    assert order == ["plot", "micrograph", "diagram", "blot", "heatmap", "photograph", "scan"]
    flat = Counter(sc.drawn_kind(SEED, i, n, True) for i in range(500) for n in range(1, 6))
    assert set(flat) == set(sc.FLAT_KINDS)
    # The same (seed, index, number) gives the same kind; another seed another mix.
    assert [sc.graphic_kind(SEED, i, 1) for i in range(40)] == [
        sc.graphic_kind(SEED, i, 1) for i in range(40)
    ]
    assert [sc.graphic_kind(SEED, i, 1) for i in range(40)] != [
        sc.graphic_kind(SEED + 1, i, 1) for i in range(40)
    ]
    with pytest.raises(ValueError, match="has no graphic 99"):
        sc.graphic_kind(SEED, 0, 99)
    # PNG and TIFF files hold line art only; a duplicate shows its source's kind.
    for index in range(200):
        plan = sc.plan_article(SEED, index)
        kinds = sc.article_kinds(SEED, plan)
        for fig in plan.figures:
            for graphic in fig.graphics:
                if graphic.fmt in ("png", "tiff"):
                    assert kinds[graphic.number] in sc.FLAT_KINDS
                if graphic.dup:
                    source_plan, source = sc._drawn_from(SEED, plan, graphic)
                    assert (
                        kinds[graphic.number] == sc.article_kinds(SEED, source_plan)[source.number]
                    )


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _kind_looks_right(kind: str, pixels: np.ndarray) -> None:
    spread = pixels.max(axis=2) - pixels.min(axis=2)  # 0 where gray
    white = (pixels.min(axis=2) > 245).mean()
    if kind == "scan":  # gray, black around a bright body
        assert spread.max() <= 2 and pixels.max() > 170 and (pixels[..., 0] < 25).mean() > 0.15
    elif kind == "photograph":  # colour everywhere, no white background
        assert white < 0.02 and spread.mean() > 15
    elif kind == "diagram":  # white page, coloured boxes
        assert white > 0.4 and (spread > 20).mean() > 0.05
    elif kind == "blot":  # gray bands on a light membrane
        assert spread.max() <= 2 and np.median(pixels) > 180 and pixels.min() < 120
    elif kind == "heatmap":  # a coloured grid on white
        assert white > 0.05 and (spread > 40).mean() > 0.3


@pytest.mark.parametrize("kind", ["scan", "photograph", "diagram", "blot", "heatmap"])
def test_every_panel_shows_the_kind(kind):
    """Single and multi-panel graphics of a kind: each panel looks like it (gray scans on
    black, photographs without a white background, diagrams on white, ...)."""
    found = Counter()
    for index in range(400):
        for number in range(1, 6):
            if sc.drawn_kind(SEED, index, number, False) != kind:
                continue
            image = sc.render_image(SEED, index, number, 320, flat=False)
            pixels = _pixels(image)
            rng = np.random.default_rng([SEED, index, number])
            rng.random()
            panels = int(rng.choice([1, 1, 2, 2, 4]))
            found[panels] += 1
            if panels == 1:
                _kind_looks_right(kind, pixels)
                continue
            rows = panels // 2
            ph, pw = image.height // rows, image.width // 2
            for p in range(panels):
                y, x = (p // 2) * ph, (p % 2) * pw
                # Each panel, less its corner letter.
                panel = pixels[y : y + ph, x : x + pw]
                _kind_looks_right(kind, panel[ph // 3 :, :])
            if found[1] and found[2] + found[4] >= 2:
                return
    pytest.fail(f"too few {kind} graphics: {found}")


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kinds")
    corpus, out = root / "corpus", root / "out"
    summary = sc.generate_corpus(str(corpus), 24, seed=SEED, image_side=160)
    assert run_extract(["--source", str(corpus), "--output", str(out)])["balanced"]
    manifest = json.loads((corpus / sc.MANIFEST_NAME).read_text())
    return {
        "summary": summary,
        "manifest": manifest,
        "figures": read_table(out / "extract" / "figures"),
        "corpus": corpus,
    }


def test_manifest_maps_every_figure_row_to_its_kind(extracted):
    manifest, figures = extracted["manifest"], extracted["figures"]
    kinds = sc.figure_kinds(manifest)
    files = {
        f"{p.parent.name}/{p.name}"
        for p in extracted["corpus"].glob("PMC*/*")
        if p.suffix in (".jpg", ".png", ".tif")
    }
    assert set(kinds) == files  # every graphic file of every version, nothing else
    assert set(kinds.values()) <= set(sc.KINDS)
    assert len(figures) > 60
    for row in figures:
        key = sc.figure_kind_key(
            row["article_accession_id"], row["article_version"], row["image_file_name"]
        )
        assert sc.row_kind(kinds, row) == kinds[key]
        pmcid = row["article_accession_id"]
        plan = sc.plan_article(SEED, int(pmcid[3:]) - 9_000_001)
        [graphic] = [
            g for f in plan.figures for g in f.graphics if row["image_file_name"].startswith(g.stem)
        ]
        assert kinds[key] == sc.graphic_kind(SEED, plan.index, graphic.number)
    # Duplicates carry their source's kind.
    assert manifest["duplicates"]
    for dup in manifest["duplicates"]:
        for folder in dup["folders"]:
            assert kinds[f"{folder}/{dup['file']}"] == kinds[dup["copies"]]
    summary = extracted["summary"]
    assert sum(summary["graphic_kinds"].values()) == summary["figures"]
    assert len(summary["graphic_kinds"]) >= 5


def test_captions_mostly_name_their_kind(extracted):
    kinds = sc.figure_kinds(extracted["manifest"])
    speaking, figures_seen, panels = 0, 0, 0
    for row in extracted["figures"]:
        if row["figure_type"] != "fig" or row["graphic_index"] > 1:
            continue  # a table's caption, or a later graphic of a multi-graphic figure
        kind = sc.row_kind(kinds, row)
        title = row["caption"].split("\n")[0]
        figures_seen += 1
        speaking += any(cue in title for cue in CUES[kind])
        panels += bool(re.search(r"\(A\) .*", row["caption"]))
        # A title never names another kind's picture.
        for other, cues in CUES.items():
            assert other == kind or not any(cue in title for cue in cues), (kind, title)
    assert figures_seen > 50
    assert 0.65 <= speaking / figures_seen <= 0.92, (speaking, figures_seen)
    assert panels == figures_seen  # every figure caption keeps its (A) ... panel cues
