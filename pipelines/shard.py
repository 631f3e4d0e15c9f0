"""`biomedica shard`: extract output to a dataset that training code reads as it is.

    biomedica shard --input out/run --output gs://bucket/dataset [--annotations out/ann]

Writes under --output: webdataset/<group>/<index:06d>.tar, parquet/<group>/<index:06d>.parquet,
manifest.json, README.md (dataset card) with charts/, dead_letter/ and run_report.json.
A second run into the same output with the same input and parameters resumes (complete,
identical shards are kept); anything else is refused unless --overwrite.
"""

from __future__ import annotations

import json
import posixpath
import sys
import time

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.flags import UsageError
from pipelines.options import (
    ExtractOptions,
    RunOptions,
    ShardInputOptions,
    ShardOptions,
)
from pipelines.runner import (
    REPORT,
    figure_files,
    figure_inputs,
    input_layout,
    job_options,
    main_of,
    make_pipeline,
    nothing_selected,
    output_lock,
    progress,
    refuse_overlap,
    run_and_report,
)
from transforms import report, run_lock, storage
from transforms.extract_layout import Layout
from transforms.outcomes import DEAD
from transforms.shard import dataset_card
from transforms.shard.sources import (
    ANNOTATIONS_FOLDER,
    TEXT,
    ParquetSource,
    annotations_file,
    articles_file,
    missing_annotation_columns,
)
from transforms.shard.write_shards import (
    COUNTS,
    LABELS,
    STAGE,
    STATS,
    WORK_DIR,
    WriteShards,
    count_rows,
)
from transforms.sinks import WriteDeadLetters, open_native

RUN_FILE = "_run.json"
SHARD_STAGES = {STAGE: ("out", "dead_letter")}
OUTPUT_PARTS = [
    "webdataset",
    "parquet",
    "charts",
    "dead_letter",
    dataset_card.MANIFEST,
    dataset_card.CARD,
    REPORT,
    RUN_FILE,
]


def input_files(pattern: str) -> list[storage.FileInfo]:
    files = storage.glob(pattern)
    if not files:
        raise SystemExit(f"no Parquet matches {pattern}")
    return files


def _has_text_column(uri: str) -> bool:
    source = open_native(uri)
    try:
        return TEXT in pq.ParquetFile(source).schema_arrow.names
    except (OSError, ValueError, pa.ArrowException):
        return True  # unreadable: the job dead-letters it, with the reason
    finally:
        if not isinstance(source, str):
            source.close()


def refuse_missing_texts(
    files: list[storage.FileInfo], without_text: bool, layout: Layout | None = None
) -> None:
    """Refuse, before the job, figure files whose article texts are nowhere: no
    `article_text` column and no articles file of the same name in the input's articles
    folder (`layout`; for a glob, the sibling folder): copying extract/figures alone would
    give every sample an empty text, silently."""
    if without_text:
        return
    present: dict[str, set[str]] = {}
    missing = []
    for found in files:
        articles = articles_file(found.uri, layout.articles if layout else None)
        folder, name = posixpath.split(articles)
        if folder not in present:  # one listing per folder, not one request per file
            present[folder] = {
                posixpath.basename(f.uri) for f in storage.glob(storage.join(folder, "*.parquet"))
            }
        if name not in present[folder] and not _has_text_column(found.uri):
            missing.append((found.uri, articles))
    if missing:
        figures, articles = missing[0]
        more = f" (and {len(missing) - 1} more figure files)" if len(missing) > 1 else ""
        fix = "copy extract/articles beside extract/figures"
        if layout is not None and layout.linked:
            fix = f"--input {layout.root} is an unfinished enrich output: run enrich again"
        raise SystemExit(
            f"{articles} is missing: it holds the article texts of {figures}{more}; {fix}, "
            "or pass --without_article_text to write every sample with an empty article_text"
        )


def _parquet_columns(uri: str) -> list[str] | None:
    """The column names of a Parquet file, from its footer; None if it cannot be read."""
    source = open_native(uri)
    try:
        return pq.ParquetFile(source).schema_arrow.names
    except (OSError, ValueError, pa.ArrowException):
        return None
    finally:
        if not isinstance(source, str):
            source.close()


def annotation_inputs(
    files: list[storage.FileInfo], annotations: str | None
) -> list[storage.FileInfo]:
    """The annotations file of each figure file (--annotations), checked before the job: an
    ANN with no annotations/ folder, a figure file without its annotations file, or one
    that cannot be read or lacks ANNOTATION_SCHEMA's columns is refused in one line."""
    if not annotations:
        return []
    folder = storage.join(annotations, ANNOTATIONS_FOLDER)
    present = {posixpath.basename(f.uri): f for f in storage.glob(storage.join(folder, "*"))}
    if not present:
        raise SystemExit(
            f"--annotations {annotations} has no {ANNOTATIONS_FOLDER}/ folder (or it is empty): "
            "pass the --output of a `biomedica annotate` run"
        )
    found, missing = [], []
    for figure in files:
        info = present.get(posixpath.basename(figure.uri))
        if info is None:
            missing.append(figure.uri)
        else:
            found.append(info)
    if missing:
        more = f" (and {len(missing) - 1} more figure files)" if len(missing) > 1 else ""
        raise SystemExit(
            f"{annotations_file(annotations, missing[0])} is missing: it holds the labels of "
            f"{missing[0]}{more}; annotate the same extract output, or shard without "
            "--annotations"
        )
    for info in found:
        columns = _parquet_columns(info.uri)
        if columns is None:
            raise SystemExit(f"{info.uri} is not a readable Parquet file (--annotations)")
        lacking = missing_annotation_columns(columns)
        if lacking:
            raise SystemExit(
                f"{info.uri} lacks the annotation columns {', '.join(lacking)}: it is not "
                "an annotations file of `biomedica annotate` (transforms.records.Annotation)"
            )
    return found


def fingerprint(files: list[storage.FileInfo], parameters: dict) -> dict:
    """What a run is made of: a second run with the same fingerprint may resume it. `files`:
    every file the samples come from, the articles files among them (a new enrich rewrites
    those alone)."""
    return {"input": [{"path": f.uri, "bytes": f.size} for f in files], "parameters": parameters}


def article_inputs(files: list[storage.FileInfo], layout: Layout | None) -> list[storage.FileInfo]:
    """The articles files of the figure files that exist (one listing of the folder): part
    of the run's fingerprint, since their columns reach the samples."""
    wanted = {articles_file(f.uri, layout.articles if layout else None) for f in files}
    folders = sorted({posixpath.dirname(uri) for uri in wanted})
    found = [f for d in folders for f in storage.glob(storage.join(d, "*.parquet"))]
    return sorted((f for f in found if f.uri in wanted), key=lambda f: f.uri)


def remove_work(output: str) -> None:
    """Spilled rows and pieces of a run: gone once it ends (or before a run starts over)."""
    storage.remove_tree(storage.join(output, WORK_DIR))


def prepare_dataset_output(output: str, fingerprint: dict, overwrite: bool) -> str:
    """ "fresh", "resume" or "overwrite"; refuses to mix runs."""
    remove_work(output)
    run_uri = storage.join(output, RUN_FILE)
    present = [p for p in OUTPUT_PARTS if storage.exists(storage.join(output, p))]
    mode = "fresh"
    if present:
        previous = json.loads(storage.read_bytes(run_uri)) if RUN_FILE in present else None
        if previous == fingerprint and not overwrite:
            # Shards stay (identical ones are kept); what describes a run is made anew.
            for part in ("dead_letter", "charts", dataset_card.MANIFEST, dataset_card.CARD, REPORT):
                storage.remove(storage.join(output, part))
            mode = "resume"
        elif overwrite:
            for part in present:
                storage.remove(storage.join(output, part))
            mode = "overwrite"
        else:
            raise SystemExit(
                f"{output} holds another run ({', '.join(present)}); its input or parameters "
                "differ from this one. Pass --overwrite to replace it."
            )
    storage.atomic_write(run_uri, [json.dumps(fingerprint, indent=2, sort_keys=True).encode()])
    return mode


def remove_unlisted(output: str, manifest: dict) -> list[str]:
    """Delete shard files the manifest does not list (left by an attempt that failed, or a
    file put there by hand): the folders hold exactly the dataset. The paths removed."""
    listed = {
        storage.join(output, s[k]) for s in manifest["shards"] for k in ("path", "parquet_path")
    }
    removed = []
    for pattern in ("webdataset/*/*", "parquet/*/*"):
        for found in storage.glob(storage.join(output, pattern)):
            if found.uri not in listed:
                storage.remove(found.uri)
                removed.append(found.uri)
    return removed


def _finish(records, stats, labels, output: str, source: str, parameters: dict, guard=None):
    if guard is not None:
        guard()  # a run that lost its lock must not publish (or prune) another's dataset
    manifest = dataset_card.build_manifest(records, source, parameters)
    remove_unlisted(output, manifest)
    for path, data in dataset_card.build_card(manifest, stats, labels).items():
        storage.atomic_write(storage.join(output, path), [data])
    storage.atomic_write(
        storage.join(output, dataset_card.MANIFEST), [dataset_card.manifest_bytes(manifest)]
    )
    yield manifest["totals"]["samples"]


def write_dataset(
    units,
    output: str,
    shards: WriteShards,
    source: str,
    parameters: dict,
    header: dict,
    earlier_stages=None,
    guard: run_lock.Guard | None = None,
):
    """Shards, Parquet, manifest, card, dead letters and report from the units of a source.

    A source that counts a stage of its own (subset's filter) passes that stage's balance
    terms, so that one report covers the whole run.
    """
    written = units | "Shards" >> shards
    stats = written[STATS] | "CardCounts" >> beam.CombinePerKey(sum)
    labels = written[LABELS] | "LabelCounts" >> beam.CombinePerKey(sum)
    records = written["records"]
    (
        records
        | "AllShards" >> beam.combiners.ToList()
        | "ManifestAndCard"
        >> beam.FlatMap(
            _finish,
            stats=beam.pvalue.AsList(stats),
            labels=beam.pvalue.AsList(labels),
            output=output,
            source=source,
            parameters=parameters,
            guard=guard,
        )
    )
    dead_letters = written[DEAD]
    dead_letters | "WriteDead" >> WriteDeadLetters(storage.join(output, "dead_letter"), guard=guard)
    counts = (
        written[COUNTS],
        records | "Out" >> beam.Map(lambda r: (f"{STAGE}.out", r.samples)),
        records
        | "ShardsKept"
        >> beam.Map(lambda r: (f"{STAGE}.shards_{'written' if r.rewritten else 'kept'}", 1)),
        records
        | "ShardsJoined"
        >> beam.FlatMap(
            lambda r: [(f"{STAGE}.shards_joined_from_pieces", 1)] if r.pieces > 1 else []
        ),
        dead_letters | "DeadCounts" >> beam.FlatMap(report.dead_letter_counts),
    )
    (
        counts
        | "AllCounts" >> beam.Flatten()
        | "RunReport"
        >> report.WriteRunReport(
            storage.join(output, REPORT), {**(earlier_stages or {}), **SHARD_STAGES}, header
        )
    )


def shard_transform(options, output: str, source, rows: int) -> WriteShards:
    try:
        return WriteShards.from_args(options.view_as(ShardOptions), output, source, rows)
    except ValueError as err:  # a flag value the writer refuses
        raise UsageError(str(err)) from None


def run(argv=None, test_pipeline=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    _, options, opts, source = job_options("shard", argv, __doc__)
    allow_empty = options.view_as(ExtractOptions).allow_empty
    without_text = options.view_as(ShardInputOptions).without_article_text
    annotations = options.view_as(ShardInputOptions).annotations
    refuse_overlap(opts.output, annotations=annotations)
    layout = input_layout(source)  # None for a figure file or glob
    files = figure_inputs(figure_files(source), allow_empty, "an empty dataset")
    refuse_missing_texts(files, without_text, layout)
    labels = annotation_inputs(files, annotations)
    rows = count_rows([f.uri for f in files])
    articles = layout.articles if layout else None
    shards = shard_transform(
        options,
        opts.output,
        ParquetSource(article_text=not without_text, annotations=annotations, articles=articles),
        rows,
    )
    parameters = {
        "samples_per_shard": shards.samples_per_shard,
        "max_caption_chars": shards.max_caption_chars,
    }
    if without_text:  # said in the manifest and card: the texts were left out on purpose
        parameters["without_article_text"] = True
    if annotations:  # another annotations folder (or its files changed): another run
        parameters["annotations"] = annotations
    units = ("FigureFiles", sorted(f.uri for f in files))
    result = run_dataset_job(
        "shard",
        options,
        test_pipeline,
        source,
        files + article_inputs(files, layout) + labels,
        units,
        shards,
        parameters,
        total=rows,
    )
    return nothing_selected(result, STAGE, "the input holds no figure sample", allow_empty)


def run_dataset_job(
    pipeline: str,
    options: PipelineOptions,
    test_pipeline,
    source: str,
    files: list[storage.FileInfo],
    units: tuple[str, list[str]],
    shards: WriteShards,
    parameters: dict,
    total: int | None = None,
    earlier_stages=None,
) -> dict:
    """Shard and subset alike: hold the output, prepare it (fresh, resume or overwrite),
    write the dataset from `units` (a label and the unit names), and return the report."""
    opts = options.view_as(RunOptions)
    with output_lock(opts.output) as lock:
        mode = prepare_dataset_output(opts.output, fingerprint(files, parameters), opts.overwrite)
        header = {
            "pipeline": pipeline,
            "input": source,
            "output": opts.output,
            "mode": mode,
            "parameters": parameters,
        }
        p = make_pipeline(options, test_pipeline)
        label, names = units
        write_dataset(
            p | label >> beam.Create(names),
            opts.output,
            shards,
            source,
            parameters,
            header,
            earlier_stages=earlier_stages,
            guard=run_lock.Guard(opts.output, lock.run_id),
        )
        shown = progress(opts.log_level, pipeline, ["samples", "shards"], total)
        return run_and_report(p, opts.output, time.time(), [WORK_DIR], lock, shown)


main = main_of(run, "shard")


if __name__ == "__main__":
    sys.exit(main())
