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

from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipelines import options as flags
from pipelines.flags import UsageError
from pipelines.options import ExtractOptions, InputOptions, RunOptions, SubsetOptions
from pipelines.runner import main_of, nothing_selected, refuse_overlap
from pipelines.shard import input_files, run_dataset_job, shard_transform
from transforms import storage
from transforms.records import SHARD_INDEX_SCHEMA
from transforms.shard.row_filter import FilterError, compile_where
from transforms.shard.sources import DatasetSubset
from transforms.shard.write_shards import count_rows

STAGE = "subset"
SUBSET_STAGES = {STAGE: ("out", "filtered")}


def run(argv=None, test_pipeline=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    flags.parse("subset", argv, __doc__)
    options = PipelineOptions(argv)
    opts = options.view_as(RunOptions)
    source = options.view_as(InputOptions).input
    where = options.view_as(SubsetOptions).where
    if not (source and opts.output and where):
        raise UsageError("--input, --where and --output are required")
    try:
        compile_where(where, SHARD_INDEX_SCHEMA)
    except FilterError as err:
        raise UsageError(f"--where: {err}") from None
    refuse_overlap(opts.output, input=source)
    options.view_as(SetupOptions).save_main_session = False
    pattern = storage.join(source, "parquet", "*", "*.parquet")
    files = input_files(pattern)
    rows = count_rows([f.uri for f in files])
    shards = shard_transform(options, opts.output, DatasetSubset(source, where, STAGE), rows)
    parameters = {
        "where": where,
        "samples_per_shard": shards.samples_per_shard,
        "max_caption_chars": shards.max_caption_chars,
    }
    units = ("SourceShards", DatasetSubset.units_of([f.uri for f in files]))
    result = run_dataset_job(
        STAGE,
        options,
        test_pipeline,
        source,
        files,
        units,
        shards,
        parameters,
        earlier_stages=SUBSET_STAGES,
    )
    why = f"--where matched none of the {rows:,} samples of {source}"
    return nothing_selected(result, STAGE, why, options.view_as(ExtractOptions).allow_empty)


main = main_of(run, "subset")


if __name__ == "__main__":
    sys.exit(main())
