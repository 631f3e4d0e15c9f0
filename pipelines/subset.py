"""`biomedica subset`: a new dataset holding only the samples that match a filter.

    biomedica subset --input gs://bucket/dataset --output gs://bucket/cardiology \\
        --where "article_license_group == 'commercial' and 'Heart Diseases' in article_mesh_terms"

Each source shard is a unit of the shard writer (shard_sources.DatasetSubset): the filter
runs over its Parquet (no images read) to plan, then its tar is read once and the matches
go through the same writer as `shard`, so the subset has shards, Parquet, manifest, card and
report of its own, its samples in source order.
"""

from __future__ import annotations

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
from transforms import storage
from transforms.records import SHARD_INDEX_SCHEMA
from transforms.shard.row_filter import FilterError, compile_where
from transforms.shard.sources import DatasetSubset
from transforms.shard.write_shards import WORK_DIR, WriteShards, count_rows

STAGE = "subset"
SUBSET_STAGES = {STAGE: ("out", "filtered")}


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
    shards = WriteShards.from_args(
        options.view_as(ShardOptions),
        opts.output,
        DatasetSubset(opts.input, where, STAGE),
        count_rows([f.uri for f in files]),
    )
    parameters = {
        "where": where,
        "samples_per_shard": shards.samples_per_shard,
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
    units = DatasetSubset.units_of([f.uri for f in files])
    write_dataset(
        p | "SourceShards" >> beam.Create(units),
        opts.output,
        shards,
        opts.input,
        parameters,
        header,
        earlier_stages=SUBSET_STAGES,
    )
    return run_and_report(p, opts.output, started, [WORK_DIR])


main = main_of(run)


if __name__ == "__main__":
    sys.exit(main())
