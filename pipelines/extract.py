"""`biomedica extract`: discover + extract + dedupe, from a PMC source to Parquet.

    biomedica extract --source s3://pmc-oa-opendata --output gs://bucket/run [beam flags]

Writes under --output: extract/articles/*.parquet, extract/figures/*.parquet (one row per
figure sample), extract/duplicates/*.parquet, dead_letter/*.jsonl, filtered/*.jsonl and
run_report.json.
"""

from __future__ import annotations

import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipelines import options as flags
from pipelines.flags import UsageError
from pipelines.options import ExtractOptions, RunOptions
from pipelines.runner import (
    REPORT,
    main_of,
    make_pipeline,
    output_lock,
    prepare_output,
    progress,
    refuse_overlap,
    run_and_report,
)
from transforms import article_files, report, run_lock, storage
from transforms.extract import FIGURE_ROWS, ExtractArticles
from transforms.images.dedupe import Dedupe
from transforms.outcomes import DEAD, FILTERED, LISTED, NOTED
from transforms.pmc.discover import Discover, source_is_empty
from transforms.pmc.selection import normalize_time
from transforms.records import ARTICLE_SCHEMA, DUPLICATE_SCHEMA, FIGURE_FILE_SCHEMA
from transforms.sinks import (
    WriteArticleFiles,
    WriteDeadLetters,
    WriteSortedTable,
    article_order,
    figure_order,
)

# The newest LastModified of the versions this run took: where an incremental run
# (`biomedica run --since`) starts.
WATERMARK = "watermark.json"
OUTPUT_DIRS = ["extract", "dead_letter", "filtered", WATERMARK]


def _sortable_time(value: str) -> str:
    try:
        return normalize_time(value)
    except ValueError:
        return ""


def _write_watermark(newest: str, uri: str, guard=None) -> None:
    import json

    if guard is not None:
        guard()
    storage.write_bytes(uri, (json.dumps({"last_modified": newest}) + "\n").encode())


# Counted only: a --pmcids run over all of PMC would write a line per article not asked for.
_UNWRITTEN_FILTERS = frozenset({"pmcid_not_requested"})


def _source_required(options: ExtractOptions, run_options: RunOptions) -> None:
    missing = [
        flag
        for flag, value in (("source", options.source), ("output", run_options.output))
        if not value
    ]
    if missing:
        raise UsageError("missing " + ", ".join(f"--{m}" for m in missing))


def build(
    p: beam.Pipeline,
    options: ExtractOptions,
    out: str,
    discover: Discover | None = None,
    guard: run_lock.Guard | None = None,
) -> None:
    """Wire the stages; every transform below owns its flags and its checks. `guard` checks
    before each final move that the run still holds the output's lock."""
    discover = discover or Discover.from_args(options)
    extract = ExtractArticles.from_args(options, discover.s3, discover.selection)
    dedupe = Dedupe.from_args(options)

    found = p | "Discover" >> discover
    extracted = found["refs"] | "ExtractStage" >> extract
    (
        found["refs"]
        | "LastModified" >> beam.Map(lambda ref: _sortable_time(ref.last_modified))
        | "Watermark" >> beam.CombineGlobally(lambda times: max(times, default=""))
        | "WriteWatermark" >> beam.Map(_write_watermark, storage.join(out, WATERMARK), guard)
    )
    deduped = extracted[FIGURE_ROWS] | "Dedupe" >> dedupe

    # Files by content: an article's row and its figures go to files of the same name, one
    # per ARTICLES_PER_FILE articles listed, whatever the runner or the bundles.
    per_file = article_files.ARTICLES_PER_FILE
    files = (
        found["refs"]
        | "CountRefs" >> beam.combiners.Count.Globally()
        | "FileCount" >> beam.Map(article_files.file_count, per_file)
    )
    extracted["articles"] | "WriteArticles" >> WriteArticleFiles(
        directory=storage.join(out, "extract", "articles"),
        staging=storage.join(out, "extract", "_staging", "articles"),
        schema=ARTICLE_SCHEMA,
        count=files,
        order=article_order,
        batch_rows=64,
        guard=guard,
    )
    kept = extracted[FIGURE_ROWS] | "WriteFigures" >> WriteArticleFiles(
        directory=storage.join(out, "extract", "figures"),
        staging=storage.join(out, "extract", "_staging", "figures"),
        schema=FIGURE_FILE_SCHEMA,
        count=files,
        order=figure_order,
        dropped=deduped["dropped"],
        guard=guard,
    )
    deduped["duplicates"] | "WriteDuplicates" >> WriteSortedTable(
        storage.join(out, "extract", "duplicates"),
        DUPLICATE_SCHEMA,
        lambda d: d["key"],
        guard=guard,
    )
    dead_letters = (found[DEAD], extracted[DEAD]) | "AllDead" >> beam.Flatten()
    dead_letters | "WriteDead" >> WriteDeadLetters(storage.join(out, "dead_letter"), guard=guard)
    left_out = (found[FILTERED], extracted[FILTERED]) | "AllFiltered" >> beam.Flatten()
    (
        left_out
        | "Written" >> beam.Filter(lambda f: f.reason not in _UNWRITTEN_FILTERS)
        | "WriteFiltered" >> WriteDeadLetters(storage.join(out, "filtered"), "filtered", guard)
    )

    counts = (
        found[LISTED] | "DiscoverIn" >> report.ones("discover.in"),
        found["refs"] | "DiscoverOut" >> report.ones("discover.out"),
        extracted[LISTED] | "ArticlesIn" >> beam.Map(lambda stage: (f"{stage}.in", 1)),
        extracted["articles"] | "ArticlesOut" >> report.ones("extract_articles.out"),
        extracted["articles"]
        | "FiguresIn" >> beam.Map(lambda a: ("extract_figures.in", a.article_figure_count)),
        extracted[FIGURE_ROWS] | "FiguresOut" >> report.ones("extract_figures.out"),
        extracted[FIGURE_ROWS] | "DedupeIn" >> report.ones("dedupe.in"),
        kept | "DedupeOut" >> beam.Map(lambda n: ("dedupe.out", n)),
        deduped["duplicates"] | "DedupeDropped" >> report.ones("dedupe.duplicates"),
        deduped["duplicates"]
        | "DedupeKinds" >> beam.Map(lambda d: (f"dedupe.duplicates_by_kind.{d.kind}", 1)),
        dead_letters | "DeadCounts" >> beam.FlatMap(report.dead_letter_counts),
        left_out | "FilteredCounts" >> beam.FlatMap(report.filtered_counts),
        found[NOTED] | "Noted" >> beam.Map(lambda note: (f"{note[0]}.{note[1]}", 1)),
    )
    header = {
        "pipeline": "extract",
        "source": options.source,
        "layout": discover.layout,
        "output": out,
        "parameters": {
            "license_groups": list(discover.selection.license_groups),
            "include_retracted": discover.selection.include_retracted,
            "include_non_oa": discover.selection.include_non_oa,
            "modified_since": discover.selection.modified_since,
            "modified_before": discover.selection.modified_before,
            "pmcids": len(discover.selection.pmcids),
            "all_versions": discover.all_versions,
            "inventory": discover.inventory,
            "min_side": extract.limits.min_side,
            "max_pixels": extract.limits.max_pixels,
            "near_duplicate_threshold": dedupe.threshold,
        },
    }
    (
        counts
        | "AllCounts" >> beam.Flatten()
        | "RunReport"
        >> report.WriteRunReport(storage.join(out, REPORT), report.EXTRACT_STAGES, header)
    )


def run(argv=None, test_pipeline=None) -> dict:
    """Run the extract pipeline; returns the run report (also printed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    flags.parse("extract", argv, __doc__)
    options = PipelineOptions(argv)
    extract_options = options.view_as(ExtractOptions)
    run_options = options.view_as(RunOptions)
    _source_required(extract_options, run_options)
    refuse_overlap(run_options.output, source=extract_options.source)
    options.view_as(SetupOptions).save_main_session = False
    # Before the output is touched: flag values a stage refuses (dates, license groups);
    # naming the layout may refuse the source.
    try:
        discover = Discover.from_args(extract_options)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if not discover.allow_empty and source_is_empty(
        discover.source, discover.layout, discover.s3, discover.inventory
    ):
        raise SystemExit(
            f"biomedica extract: --source {discover.source} does not exist or holds no files"
            " (pass --allow_empty to run on it anyway)"
        )
    p = make_pipeline(options, test_pipeline)
    run_id = run_lock.new_run_id()
    guard = run_lock.Guard(run_options.output, run_id)
    try:  # builds the graph only
        build(p, extract_options, run_options.output, discover, guard)
    except ValueError as err:
        raise UsageError(str(err)) from None
    with output_lock(run_options.output, run_id) as lock:
        prepare_output(run_options.output, REPORT, run_options.overwrite, OUTPUT_DIRS)
        shown = progress(run_options.log_level, "extract", ["articles", "figures"])
        result = run_and_report(
            p, run_options.output, time.time(), ["extract/_staging"], lock, shown
        )
    return _check_found(result, discover)


def _check_found(result: dict, discover: Discover) -> dict:
    """An empty discovery is an error, unless asked for (--allow_empty) or incremental: a
    --modified_since run that found versions but none new says so and succeeds."""
    stage = result.get("stages", {}).get("discover")
    if discover.allow_empty or stage is None or stage.get("out"):
        return result
    source = f"--source {discover.source} (layout {discover.layout})"
    if not stage.get("in"):
        raise SystemExit(
            f"biomedica extract: nothing found at {source}; pass --allow_empty to accept it"
        )
    since = discover.selection.modified_since
    if since:
        result["note"] = f"nothing new since {since}: {stage['in']} found, none selected"
        print(f"biomedica extract: {result['note']}", file=sys.stderr)
        return result
    why = ", ".join(
        f"{reason} {n}"
        for by in ("filtered_by_reason", "dead_letter_by_reason")
        for reason, n in sorted(stage.get(by, {}).items())
    )
    raise SystemExit(
        f"biomedica extract: nothing selected at {source}: {stage['in']} found ({why});"
        " pass --allow_empty to accept it"
    )


main = main_of(run, "extract")


if __name__ == "__main__":
    sys.exit(main())
