"""The dataset's manifest and its card (README.md with PNG charts): pure, Beam-free."""

from __future__ import annotations

import io
import json
from collections import Counter

import pyarrow as pa

from transforms.pmc.licenses import GROUPS
from transforms.records import FIGURE_SCHEMA, ShardRecord
from transforms.shard.samples import PAYLOAD_COLUMNS, SCHEMA_VERSION

MANIFEST = "manifest.json"
CARD = "README.md"
TOP_JOURNALS = 20


def build_manifest(records: list[ShardRecord], source: str, parameters: dict) -> dict:
    shards = sorted(records, key=lambda r: r.path)
    groups = {}
    for group in GROUPS:
        mine = [r for r in shards if r.group == group]
        if mine:
            groups[group] = {
                "shards": len(mine),
                "samples": sum(r.samples for r in mine),
                "bytes": sum(r.bytes for r in mine),
            }
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "webdataset",
        "source": source,
        "parameters": parameters,
        "totals": {
            "shards": len(shards),
            "samples": sum(r.samples for r in shards),
            "bytes": sum(r.bytes for r in shards),
        },
        "groups": groups,
        "shards": [
            {
                "group": r.group,
                "index": r.index,
                "path": r.path,
                "samples": r.samples,
                "bytes": r.bytes,
                "sha256": r.sha256,
                "parquet_path": r.parquet_path,
                "parquet_sha256": r.parquet_sha256,
            }
            for r in shards
        ],
    }


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def _bar_chart(counts: list[tuple[str, int]], title: str, horizontal: bool = False) -> bytes:
    fig = _bar_figure(counts, title, horizontal)
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _bar_figure(counts: list[tuple[str, int]], title: str, horizontal: bool = False):
    # Figure + Agg canvas directly: pyplot (its import alone costs about half a CPU second)
    # is for interactive use, and keeps global state a worker does not need.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels = [str(k) for k, _ in counts] or ["(none)"]
    values = [v for _, v in counts] or [0]
    height = max(3.0, 0.3 * len(labels) + 1.5) if horizontal else 4.0
    fig = Figure(figsize=(8, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if horizontal:
        ax.barh(labels[::-1], values[::-1], color="#3b6ea5")
    else:
        ax.bar(labels, values, color="#3b6ea5")
        ax.tick_params(axis="x", labelrotation=45 if len(labels) > 8 else 0)
    ax.set_title(title)
    ax.set_xlabel("samples" if horizontal else "")
    ax.set_ylabel("" if horizontal else "samples")
    # Sample counts are whole: no 0.5 ticks on a chart of small counts.
    (ax.xaxis if horizontal else ax.yaxis).set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


_GROUP_COLORS = ("#3b6ea5", "#e08a3c", "#7a9a5b")  # per license group, in GROUPS order


def _stacked_chart(rows: list[tuple[str, list[int]]], series: list[str], title: str) -> bytes:
    """Horizontal bars, one per row, stacked by series (license groups): PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels = [label for label, _ in rows][::-1]
    fig = Figure(figsize=(8, max(3.0, 0.3 * len(rows) + 1.8)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    left = [0] * len(rows)
    for k, name in enumerate(series):
        values = [values[k] for _, values in rows][::-1]
        color = _GROUP_COLORS[GROUPS.index(name) if name in GROUPS else k % len(_GROUP_COLORS)]
        ax.barh(labels, values, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_title(title)
    ax.set_xlabel("samples")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


NO_LABEL = "(no label)"
NO_SOURCE = "(none)"


def label_section(
    labels: list[tuple[tuple[str, str, str], int]] | None,
) -> tuple[list[str], dict[str, bytes]]:
    """The card's label mix (lines and charts) from ((group, "primary" | "source", value), n)
    counts: samples per primary label and per label source, per license group; a line
    saying there are no labels where no sample carries one."""
    table: dict[str, dict[str, Counter]] = {"primary": {}, "source": {}}
    for (group, what, value), n in labels or []:
        table.setdefault(what, {}).setdefault(value, Counter())[group] += n
    labelled = any(v for v in table["primary"]) or any(v for v in table["source"])
    lines = ["## Labels", ""]
    if not labelled:
        lines += [
            "No labels: the samples carry no annotations (`image_primary_label`, "
            "`image_label_source` are empty). `biomedica shard --annotations` fills them.",
            "",
        ]
        return lines, {}
    groups = [g for g in GROUPS if any(c[g] for part in table.values() for c in part.values())]
    files = {}
    for what, name, title, empty, header in (
        ("primary", "primary_labels", "Samples by primary label", NO_LABEL, "primary label"),
        ("source", "label_sources", "Samples by label source", NO_SOURCE, "label source"),
    ):
        rows = sorted(
            (
                (value or empty, [counts[g] for g in groups])
                for value, counts in table[what].items()
            ),
            key=lambda row: (-sum(row[1]), row[0]),
        )
        files[f"charts/{name}.png"] = _stacked_chart(rows, groups, title)
        lines += [
            f"### {title}",
            "",
            f"| {header} | " + " | ".join(groups) + " | all |",
            "|---|" + "---:|" * (len(groups) + 1),
            *[
                f"| {value} | " + " | ".join(f"{n:,}" for n in counts) + f" | {sum(counts):,} |"
                for value, counts in rows
            ],
            "",
            f"![{title.lower()}](charts/{name}.png)",
            "",
        ]
    lines[2:2] = [
        "Labels from `biomedica annotate` (cluster labels: expert, caption vote or zero-shot; "
        "`image_label_source`). A sample counts once under each of its primary labels "
        "(`image_primary_label`, the global concepts); label sources count samples.",
        "",
    ]
    return lines, files


def shard_urls(manifest: dict) -> dict[str, str]:
    """{group: the group's shard files as a webdataset brace pattern}: the runs of
    consecutive indexes, several runs joined by `::` (webdataset reads both)."""
    by_folder: dict[str, dict[str, list[int]]] = {}
    for shard in manifest.get("shards", []):
        folder, _, name = shard["path"].rpartition("/")
        by_folder.setdefault(shard["group"], {}).setdefault(folder, []).append(shard["index"])
    urls = {}
    for group, folders in by_folder.items():
        patterns = []
        for folder, indexes in sorted(folders.items()):
            indexes = sorted(set(indexes))
            runs, start = [], indexes[0]
            for before, after in zip(indexes, [*indexes[1:], None], strict=True):
                if after != before + 1:
                    runs.append((start, before))
                    start = after
            for first, last in runs:
                span = f"{first:06d}" if first == last else f"{{{first:06d}..{last:06d}}}"
                patterns.append(f"{folder}/{span}.tar")
        urls[group] = "::".join(patterns)
    return urls


_HF_DTYPES = {
    pa.string(): "string",
    pa.int64(): "int64",
    pa.float64(): "float64",
    pa.bool_(): "bool",
}


def _hf_features() -> list[str]:
    """The card's `features` of a shard sample, in Hugging Face's YAML, one line each.

    Without them `datasets` infers the JSON's types from a group's first five samples: a
    field that is null or [] in all of them gets type null, and the first later sample that
    fills it (a `fixes` entry, say) stops the load with "Couldn't cast ... to null".
    """
    fields = [f for f in FIGURE_SCHEMA if f.name not in PAYLOAD_COLUMNS]
    fields += [pa.field("fixes", pa.list_(pa.string())), pa.field("txt", pa.string())]
    struct = []
    for f in sorted(fields, key=lambda f: f.name):
        if pa.types.is_list(f.type):
            struct += [f"    - name: {f.name}", f"      list: {_HF_DTYPES[f.type.value_type]}"]
        else:
            struct += [f"    - name: {f.name}", f"      dtype: {_HF_DTYPES[f.type]}"]
    return [
        "  - name: jpg",
        "    dtype: image",
        "  - name: json",
        "    struct:",
        *struct,
        *[f"  - name: {name}\n    dtype: string" for name in ("txt", "__key__", "__url__")],
    ]


def build_card(
    manifest: dict,
    stats: list[tuple[tuple[str, str, str], int]],
    labels: list[tuple[tuple[str, str, str], int]] | None = None,
) -> dict[str, bytes]:
    """{relative path: bytes} of README.md and its charts, from (group, journal, year) counts
    and the label counts of label_section."""
    by_group: Counter = Counter()
    by_journal: Counter = Counter()
    by_year: Counter = Counter()
    for (group, journal, year), n in stats:
        by_group[group] += n
        by_journal[journal or "(unknown)"] += n
        by_year[year or "(unknown)"] += n
    groups = [(g, by_group[g]) for g in GROUPS if by_group[g]]
    journals = sorted(by_journal.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_JOURNALS]
    years = sorted(by_year.items())
    files = {
        "charts/license_groups.png": _bar_chart(groups, "Samples by license group"),
        "charts/journals.png": _bar_chart(
            journals, f"Samples by journal (top {TOP_JOURNALS})", horizontal=True
        ),
        "charts/years.png": _bar_chart(years, "Samples by publication year"),
    }
    label_lines, label_files = label_section(labels)
    files.update(label_files)
    totals = manifest["totals"]
    urls = {g: u for g, u in shard_urls(manifest).items() if g in manifest["groups"]}
    configs = "\n".join(
        f"- config_name: {g}\n  data_files:\n  - split: train\n    path: webdataset/{g}/*.tar"
        for g in manifest["groups"]
    )
    features = "\n".join(_hf_features())
    infos = "\n".join(f"- config_name: {g}\n  features:\n{features}" for g in manifest["groups"])
    lines = [
        "---",
        "license: other",
        "task_categories:",
        "- image-to-text",
        "- zero-shot-image-classification",
        "tags:",
        "- biomedical",
        "- pubmed-central",
        "- webdataset",
        "configs:",
        configs,
        "dataset_info:",
        infos,
        "---",
        "",
        "# Biomedical figure-caption dataset",
        "",
        "Figures of PubMed Central Open Access articles with their captions, the paragraphs",
        "that cite them and their articles' metadata, built by the biomedica Beam pipeline.",
        f"Source: `{manifest['source']}`.",
        "",
        f"**{totals['samples']:,} samples** in {totals['shards']:,} WebDataset shards "
        f"({totals['bytes'] / 1e6:,.1f} MB). Each sample is `<key>.jpg`, `<key>.txt` "
        "(the caption) and `<key>.json` (BIOMEDICA's field names, with ours beside them).",
        "Per-shard Parquet under `parquet/<group>/` holds every field but the image, with the "
        "shard and the offset of each sample; `manifest.json` lists every shard with its "
        "sha256.",
        "",
        "Licenses differ per article: keep to each sample's `article_license`. The groups follow "
        "PMC: commercial (CC0, CC BY, CC BY-SA, CC BY-ND), noncommercial (CC BY-NC, "
        "CC BY-NC-SA, CC BY-NC-ND), other.",
        "",
        "## Samples by license group",
        "",
        "| group | samples | shards |",
        "|---|---:|---:|",
        *[f"| {g} | {n:,} | {manifest['groups'][g]['shards']:,} |" for g, n in groups],
        "",
        "![samples by license group](charts/license_groups.png)",
        "",
        "## Samples by journal",
        "",
        "| journal | samples |",
        "|---|---:|",
        *[f"| {j} | {n:,} |" for j, n in journals],
        "",
        "![samples by journal](charts/journals.png)",
        "",
        "## Samples by publication year",
        "",
        "| year | samples |",
        "|---|---:|",
        *[f"| {y} | {n:,} |" for y, n in years],
        "",
        "![samples by year](charts/years.png)",
        "",
        *label_lines,
        "## Loading",
        "",
        "```python",
        "import webdataset as wds",
        "",
        "shards = {",
        *[
            f"    {group!r}: {url!r},  # {manifest['groups'][group]['shards']:,} shards, "
            f"{manifest['groups'][group]['samples']:,} samples"
            for group, url in urls.items()
        ],
        "}",
        *(
            [
                f"ds = wds.WebDataset(shards[{next(iter(urls))!r}])"
                ".decode('pil').to_tuple('jpg', 'txt', 'json')"
            ]
            if urls
            else ["# this dataset holds no shards"]
        ),
        "```",
        "",
    ]
    files[CARD] = "\n".join(lines).encode()
    return files
