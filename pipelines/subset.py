"""`biomedica subset`: a new dataset holding only the samples that match a filter.

    biomedica subset --input gs://bucket/dataset --output gs://bucket/cardiology \\
        --where "article_license_group == 'commercial' and 'Heart Diseases' in article_mesh_terms"

The filter runs over the dataset's Parquet (no images read); only the shards holding matches
are then read, each once, and the matches go through the same shard writer as `shard`, so
the subset has shards, Parquet, manifest, card and report of its own.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipelines.options import RunOptions, ShardOptions, SubsetOptions
from pipelines.runner import main_of, make_pipeline, run_and_report
from pipelines.shard import (
    fingerprint,
    input_files,
    prepare_dataset_output,
    write_dataset,
)
from transforms import report, storage
from transforms.outcomes import DEAD, FILTERED, LISTED, dead, filtered, listed
from transforms.records import SHARD_INDEX_SCHEMA, ShardPlacement
from transforms.row_filter import FilterError, compile_where
from transforms.shard import WORK_DIR, WriteShards, count_rows, rows_to_tables
from transforms.webdataset_tar import read_images

STAGE = "subset"
SUBSET_STAGES = {STAGE: ("out", "filtered", "dead_letter")}
# The columns a shard's Parquet adds; `fixes` travels on with the sample.
_PLACEMENT = tuple(f.name for f in dataclasses.fields(ShardPlacement) if f.name != "fixes")


class _Match(beam.DoFn):
    def __init__(self, where: str):
        self.where = where

    def setup(self):
        self.predicate = compile_where(self.where)

    def process(self, row):
        yield listed(STAGE)
        if self.predicate(row):
            yield row["shard"], row
        else:
            yield filtered(STAGE, "where_not_matched")


class _AttachImages(beam.DoFn):
    """Read one source shard once and give each matching row its image back."""

    def __init__(self, dataset: str):
        self.dataset = dataset

    def process(self, element):
        shard, rows = element
        rows = list(rows)
        uri = storage.join(self.dataset, "webdataset", shard)
        try:
            with storage.open_stream(uri) as stream:
                images = read_images(stream, {r["key"] for r in rows})
        except Exception as err:  # a missing or damaged shard: its rows become dead letters
            images, problem = {}, f"{type(err).__name__}: {err}"
        else:
            problem = "the shard holds no image under this key"
        for row in rows:
            image = images.get(row["key"])
            if not image:
                yield dead(STAGE, row["key"], "image_missing", problem, uri)
                continue
            full = {k: v for k, v in row.items() if k not in _PLACEMENT}
            full["image"] = image
            yield full


def run(argv=None, test_pipeline=None) -> dict:
    options = PipelineOptions(argv)
    opts = options.view_as(RunOptions)
    where = options.view_as(SubsetOptions).where
    if not (opts.input and opts.output and where):
        raise SystemExit("biomedica subset: --input, --where and --output are required")
    try:
        compile_where(where, SHARD_INDEX_SCHEMA.names)
    except FilterError as err:
        raise SystemExit(f"biomedica subset: {err}") from None
    options.view_as(SetupOptions).save_main_session = False
    pattern = storage.join(opts.input, "parquet", "*", "*.parquet")
    files = input_files(pattern)
    # Buckets sized from the whole source: the subset's size is known only once it is read.
    shards = WriteShards.from_args(
        options.view_as(ShardOptions), opts.output, count_rows([f.uri for f in files])
    )
    parameters = {
        "where": where,
        "samples_per_shard": shards.samples_per_shard,
        "sort_buckets": shards.buckets,
        "max_caption_chars": shards.max_caption_chars,
    }
    mode = prepare_dataset_output(opts.output, fingerprint(files, parameters), opts.overwrite)
    header = {
        "pipeline": "subset",
        "input": opts.input,
        "output": opts.output,
        "mode": mode,
        "parameters": parameters,
    }
    started = time.time()
    p = make_pipeline(options, test_pipeline)
    matched = (
        p
        | "ReadIndex" >> beam.io.ReadFromParquet(pattern)
        | "Match" >> beam.ParDo(_Match(where)).with_outputs(FILTERED, LISTED, main="rows")
    )
    attached = (
        matched.rows
        | "ByShard" >> beam.GroupByKey()
        | "AttachImages" >> beam.ParDo(_AttachImages(opts.input)).with_outputs(DEAD, main="rows")
    )
    counts = (
        matched[LISTED] | "SubsetIn" >> beam.Map(lambda stage: (f"{stage}.in", 1)),
        matched[FILTERED] | "SubsetFiltered" >> beam.FlatMap(report.filtered_counts),
        attached.rows | "SubsetOut" >> report.ones(f"{STAGE}.out"),
    )
    write_dataset(
        rows_to_tables(attached.rows),
        opts.output,
        shards,
        opts.input,
        parameters,
        header,
        earlier_counts=counts,
        earlier_dead=(attached[DEAD],),
        earlier_stages=SUBSET_STAGES,
    )
    return run_and_report(p, opts.output, started, [WORK_DIR])


main = main_of(run)


if __name__ == "__main__":
    sys.exit(main())
