"""The concept taxonomy labels are drawn from, and the words captions use for its concepts.

taxonomy.json (shipped beside this module) holds BIOMEDICA's global concepts with their local
concepts and its panel vocabulary: concept names are facts of their labelling, kept as they
are so that labels mean what theirs mean. The synonyms and abbreviations below are our own:
the phrases a caption uses for a local concept. Pure, Beam-free.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

TAXONOMY_FILE = Path(__file__).with_name("taxonomy.json")

# Local concepts whose own name is no evidence in a caption: too common in other senses
# ("Table 1", "the brain", "a network of ...", "assay buffer"). They are still labels;
# captions reach them only through the specific phrases in SYNONYMS.
NOT_BY_NAME = frozenset(
    {
        "ambiguous",
        "algorithm",
        "assay",
        "brain",
        "clinical imaging",
        "diagram",
        "drawing",
        "eye",
        "face",
        "graph",
        "human",
        "human head",
        "humans and devices",
        "illustration",
        "illustrative diagram",
        "list",
        "manuscript",
        "map",
        "natural image",
        "nature",
        "network",
        "plot",
        "plot and chart",
        "procedural image",
        "reagents",
        "skull",
        "specimen",
        "table",
        "teeth",
        "tool",
        "tree",
    }
)

# Local concept -> phrases a caption uses for it. A phrase is matched on word boundaries,
# spaces and hyphens alike, with an optional plural or -ing ending. Lower-case phrases match
# in any case; a phrase holding capitals is an abbreviation and matches only as written
# ("CT", "MRI"; never "ct" or "Mri"). Where phrases overlap the longest wins ("CT
# angiography" is angiography, not CT). Left out on purpose: bare "SEM" (standard error of
# the mean), "US" (the country), "EM" (an algorithm too), "ICC" (intraclass correlation),
# "Western" (diets, countries), "PCR" alone (gels and plots).
SYNONYMS: dict[str, tuple[str, ...]] = {
    # Microscopy
    "light microscopy": (
        "H&E",
        "HE staining",
        "hematoxylin and eosin",
        "haematoxylin and eosin",
        "hematoxylin-eosin",
        "haematoxylin-eosin",
        "bright field",
        "brightfield",
        "light micrograph",
        "histological section",
        "histology",
    ),
    "fluorescence microscopy": (
        "immunofluorescence",
        "immunofluorescent",
        "fluorescence image",
        "fluorescent image",
        "fluorescence micrograph",
        "DAPI",
    ),
    "confocal microscopy": ("confocal", "confocal image", "confocal microscope"),
    "epifluorescence microscopy": ("epifluorescence",),
    "phase contrast microscopy": ("phase contrast", "phase-contrast image"),
    "scanning electron microscopy": (
        "scanning electron micrograph",
        "scanning electron microscope",
        "SEM image",
        "SEM micrograph",
    ),
    "transmission electron microscopy": (
        "transmission electron micrograph",
        "transmission electron microscope",
        "TEM",
        "TEM image",
    ),
    "electron microscopy": ("electron micrograph", "electron microscope", "cryo-EM"),
    "microscopy": ("micrograph", "photomicrograph", "scale bar"),
    "flowcytometry": ("flow cytometry", "flow cytometric", "FACS", "cytometry"),
    # Immuno assays
    "immunoblot": ("western blot", "western blotting", "immunoblot", "immunoblotting"),
    "immunohistochemistry": (
        "IHC",
        "immunohistochemical",
        "immunohistochemical staining",
        "immunostaining",
    ),
    "immunocytochemistry": ("immunocytochemical",),
    "immunoassay": ("ELISA", "enzyme-linked immunosorbent assay"),
    "gel electrophoresis": ("agarose gel", "SDS-PAGE", "electrophoresis", "gel image"),
    # PCR
    "qPCR": ("qRT-PCR", "RT-qPCR", "real-time PCR", "quantitative PCR", "real-time RT-PCR"),
    "RT PCR": ("RT-PCR", "reverse transcription PCR", "reverse transcription-PCR"),
    # Clinical imaging
    "magnetic resonance": (
        "MRI",
        "MR image",
        "MR imaging",
        "magnetic resonance imaging",
        "T1-weighted",
        "T2-weighted",
        "FLAIR",
        "diffusion-weighted",
    ),
    "functional magnetic resonance": ("fMRI", "functional MRI", "BOLD signal"),
    "computerized tomography": (
        "CT",
        "CT scan",
        "CT image",
        "computed tomography",
        "computed tomographic",
        "computerised tomography",
        "CBCT",
        "cone beam computed tomography",
    ),
    "x-ray radiography": (
        "X-ray",
        "x-ray",
        "radiograph",
        "radiography",
        "radiographic",
        "CXR",
        "chest film",
    ),
    "angiography": ("angiogram", "angiographic", "CT angiography", "CTA", "MRA"),
    "ultrasound": (
        "ultrasonography",
        "ultrasonographic",
        "sonography",
        "sonogram",
        "echocardiography",
        "echocardiogram",
        "Doppler",
    ),
    "optical coherence tomography": ("OCT",),
    "endoscopy": ("endoscopic", "colonoscopy", "gastroscopy", "colonoscopic"),
    "laryngoscopy": ("laryngoscopic",),
    "mammography": ("mammogram",),
    "electrocardiography": ("ECG", "EKG", "electrocardiogram"),
    "eye": ("fundus photograph", "fundus image", "fundus photography", "slit lamp"),
    "skin lesion": ("dermoscopy", "dermoscopic", "skin lesion"),
    "intraoperative image": ("intraoperative", "intra-operative"),
    "intraoral imaging": ("intraoral", "intra-oral"),
    "patient photo": ("clinical photograph", "patient photograph", "photograph of the patient"),
    "teeth": ("panoramic radiograph", "dental", "tooth"),
    "brain": ("brain slice", "brain section"),
    # Chemical structures
    "2D chemical structure": ("chemical structure", "molecular structure", "structural formula"),
    "3D protein structure": (
        "crystal structure",
        "protein structure",
        "ribbon diagram",
        "ribbon representation",
        "cartoon representation",
    ),
    "3D chemical structure": ("molecular docking", "docking pose", "binding mode"),
    "2D chemical reaction": ("reaction scheme", "synthetic route", "synthesis route"),
    # Plots and charts
    "survival curve": ("Kaplan-Meier", "Kaplan Meier", "survival curve", "survival analysis"),
    "roc curve": ("ROC", "ROC curve", "receiver operating characteristic"),
    "bar plot": ("bar graph", "bar chart", "bar diagram"),
    "box plot": ("boxplot", "box-and-whisker", "box and whisker"),
    "scatter plot": ("scatterplot", "scatter diagram", "volcano plot"),
    "line plot": ("line graph", "line chart", "time course"),
    "heatmap plot": ("heat map", "heatmap"),
    "forest plot": ("forest plot",),
    "funnel plot": ("funnel plot",),
    "pie chart": ("pie graph",),
    "venn diagram": ("Venn",),
    "phylogenetic tree": ("phylogeny", "phylogenetic analysis", "maximum likelihood tree"),
    "tree": ("dendrogram", "hierarchical clustering"),
    "radial plot": ("radar chart", "radar plot", "spider chart"),
    "circos plot": ("circos",),
    "density plot": ("kernel density",),
    "sequence plot": ("sequence logo", "sequence alignment", "multiple sequence alignment"),
    "signal plot": ("chromatogram", "EEG"),
    "differential gene expression matrix": ("differentially expressed genes",),
    # Illustrative diagrams
    "diagram": ("schematic", "schematic diagram", "schematic representation"),
    "scientific illustration": ("graphical abstract", "schematic illustration", "cartoon"),
    "flowchart": ("flow chart", "workflow"),
    "cohort selection flowchart": (
        "PRISMA",
        "CONSORT",
        "study flow",
        "flow of participants",
        "patient selection",
        "study selection",
    ),
    "signaling pathway": ("signalling pathway", "signaling cascade", "signal transduction"),
    "metabolic pathway": ("metabolic pathway", "biosynthetic pathway"),
    "sankey diagram": ("Sankey",),
    "system diagram": ("system architecture", "block diagram"),
    # Graphs and networks
    "network": (
        "interaction network",
        "regulatory network",
        "co-expression network",
        "coexpression network",
        "network diagram",
        "PPI network",
    ),
    "neural network": ("CNN", "convolutional neural network", "deep learning model"),
    # Natural images
    "natural image": ("photograph", "photo"),
    "aerial photography": ("aerial photograph", "aerial view", "satellite image", "drone image"),
    "insects": ("insect", "mosquito", "mosquitoes"),
    # Laboratory specimens and cultures
    "bacterial culture": ("agar plate", "petri dish", "bacterial colonies"),
    "laboratory specimen": ("gross specimen", "gross appearance", "resected specimen"),
    # Tools, screens, maps, tables, formulae
    "electronic circuit": ("circuit diagram", "circuit board"),
    "lab equipment": ("experimental setup", "experimental set-up"),
    "medical equipment": ("medical device",),
    "screenshot": ("screen shot", "screen capture"),
    "user interface": ("GUI", "graphical user interface", "web interface"),
    "map": ("geographic map", "study area", "choropleth", "geographical distribution"),
    "checklist table": ("checklist",),
    "algorithm": ("pseudocode", "pseudo-code"),
}


@dataclass(frozen=True)
class Taxonomy:
    """Global concepts in file order, each with its local concepts; the panel vocabulary."""

    concepts: dict[str, tuple[str, ...]]
    panel_types: tuple[str, ...]
    panel_subtypes: tuple[str, ...]

    @functools.cached_property
    def global_of(self) -> dict[str, str]:
        """Local concept -> its global concept (each local concept has exactly one)."""
        return {local: g for g, locals_ in self.concepts.items() for local in locals_}

    @property
    def locals(self) -> tuple[str, ...]:
        return tuple(self.global_of)

    def as_json(self) -> dict[str, list[str]]:
        return {g: list(ls) for g, ls in self.concepts.items()}


def parse_taxonomy(data: dict) -> Taxonomy:
    concepts = {str(g): tuple(str(c) for c in ls) for g, ls in data["taxonomy"].items()}
    seen: dict[str, str] = {}
    for g, locals_ in concepts.items():
        for local in locals_:
            if local in seen:
                raise ValueError(f"local concept {local!r} under both {seen[local]!r} and {g!r}")
            seen[local] = g
    return Taxonomy(concepts, tuple(data["panel_types"]), tuple(data["panel_subtypes"]))


@functools.lru_cache(maxsize=1)
def load_taxonomy() -> Taxonomy:
    """The shipped taxonomy (read once per process)."""
    return parse_taxonomy(json.loads(TAXONOMY_FILE.read_text()))


def phrases(taxonomy: Taxonomy) -> dict[str, str]:
    """Every phrase a caption may use -> its local concept: the concept names (but those in
    NOT_BY_NAME) and SYNONYMS. A synonym naming a concept the taxonomy lacks is a bug."""
    found: dict[str, str] = {}
    for local in taxonomy.locals:
        if local not in NOT_BY_NAME:
            found[local.lower() if local == local.lower() else local] = local
    for local, words in SYNONYMS.items():
        if local not in taxonomy.global_of:
            raise ValueError(f"synonyms given for {local!r}, which the taxonomy lacks")
        for word in words:
            found[word] = local
    return found
