"""Pipeline options: every flag defined once.

Beam parses the flags of every PipelineOptions subclass that has been imported together, so
two classes may not both define `--output`: the flags every pipeline shares live in
`RunOptions`, and each pipeline's own class holds only its own flags.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.extract import ExtractArticles
from transforms.images.dedupe import Dedupe
from transforms.pmc.discover import Discover
from transforms.shard.write_shards import WriteShards


class RunOptions(PipelineOptions):
    """Where a run reads and writes."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", help="shard/subset: an extract output or a dataset")
        parser.add_argument("--output", help="output folder: a local path or gs:// URI")
        parser.add_argument(
            "--overwrite", action="store_true", help="replace whatever another run left in --output"
        )


class ExtractOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        Discover.add_arguments(parser)
        ExtractArticles.add_arguments(parser)
        Dedupe.add_arguments(parser)


class ShardOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        WriteShards.add_arguments(parser)


class SubsetOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--where", help="filter over the dataset's Parquet fields")
