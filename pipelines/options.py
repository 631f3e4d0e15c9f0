"""Pipeline options: every flag defined once.

Beam parses the flags of every PipelineOptions subclass that has been imported together, so
two classes may not both define `--output`: the flags every pipeline shares live in
`RunOptions`, and each pipeline's own class holds only its own flags.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import flags
from transforms.extract import ExtractArticles
from transforms.images.dedupe import Dedupe
from transforms.pmc.discover import Discover
from transforms.shard.write_shards import WriteShards


class RunOptions(PipelineOptions):
    """Where a run writes, and how it talks."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("output")
        group.add_argument("--output", help="output folder: a local path, gs:// or s3:// URI")
        group.add_argument(
            "--overwrite", action="store_true", help="replace whatever another run left in --output"
        )
        flags.add_log_level(group)


class InputOptions(PipelineOptions):
    """shard and subset read a dataset or an extract output."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("input")
        group.add_argument(
            "--input",
            help="an extract or enrich output (enrich, shard, embed, annotate) or a dataset "
            "(subset)",
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


class ShardInputOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("shard input")
        group.add_argument(
            "--without_article_text",
            action="store_true",
            help="shard figure files that have no extract/articles file beside them: every "
            "sample's article_text is then empty (refused otherwise)",
        )
        group.add_argument(
            "--annotations",
            metavar="ANN",
            help="a `biomedica annotate` output: each sample's cluster and labels come from "
            "ANN/annotations/<its figure file's name>, matched by key",
        )


class SubsetOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("subset")
        group.add_argument(
            "--where", help="filter over the dataset's Parquet fields (see the README)"
        )


class EmbedOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("embed")
        group.add_argument(
            "--model",
            default="pixels",
            help="pixels (weight-free descriptor), open_clip:<arch> or timm:<name>",
        )
        group.add_argument(
            "--weights",
            help="open_clip/timm weights: a checkpoint path or gs:// / s3:// URI, "
            "hf-hub:<org/name>, or none (random, from a fixed seed: for tests only) "
            "(default: none for --model pixels; open_clip and timm need it given)",
        )
        group.add_argument("--batch_size", type=int, default=32, help="images per forward pass")
        group.add_argument(
            "--device",
            default="auto",
            choices=("auto", "cpu", "cuda"),
            help="auto: a GPU (float16) where torch sees one, else the CPU (float32)",
        )
        group.add_argument(
            "--accelerator",
            help="Dataflow: the GPU of each embed worker, as a resource hint on the embed "
            "stage only (right fitting), e.g. type:nvidia-l4;count:1;machine_type:"
            "g2-standard-4;install-nvidia-driver; count must be 1 (one model per GPU). Other "
            "runners ignore it",
        )


class AllowEmpty:
    """shard, subset, embed and annotate take extract's --allow_empty (a Beam flag may be
    defined once: it is Discover's, read as options.view_as(ExtractOptions).allow_empty)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument_group("nothing written").add_argument(
            "--allow_empty",
            action="store_true",
            help="a run that writes no sample ends with status 0 (it is an error otherwise)",
        )


class MaxPixels:
    """embed takes extract's --max_pixels (defined once, by ExtractArticles): same meaning,
    same default; read from the namespace pipelines.options.parse returns."""

    @classmethod
    def _add_argparse_args(cls, parser):
        from transforms.images.checks import MAX_PIXELS

        parser.add_argument_group("image bound").add_argument(
            "--max_pixels",
            type=int,
            default=MAX_PIXELS,
            help="decompression-bomb bound: larger images are image_too_large, undecoded",
        )


class EmbeddingsInputOptions(PipelineOptions):
    """annotate's second input (run sets it to its own embed output)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument_group("annotate input").add_argument(
            "--embeddings", help="an embed output (holds embeddings/*.parquet)"
        )


class AnnotateOptions(PipelineOptions):
    """annotate: what it clusters and labels (--input is InputOptions' extract output)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("annotate")
        group.add_argument(
            "--clusters", type=int, default=2000, help="k-means clusters (at most sample / 10)"
        )
        group.add_argument("--pca_dims", type=int, default=25, help="PCA dimensions before k-means")
        group.add_argument(
            "--cluster_sample",
            type=int,
            default=100000,
            help="embeddings the clustering model is trained on (those of smallest key hash)",
        )
        group.add_argument(
            "--cluster_model",
            help="reuse a saved clustering model (cluster_model-v1.faiss, or the folder "
            "holding it; local, gs:// or s3://) instead of training one",
        )
        group.add_argument(
            "--cluster_labels",
            help="expert labels per cluster id, in BIOMEDICA's cluster_labels.json format",
        )
        group.add_argument(
            "--gallery_members",
            type=int,
            default=16,
            help="members nearest each centroid shown in the summary and the gallery",
        )
        group.add_argument(
            "--seed", type=int, default=0, help="seed of the training sample and of k-means"
        )


class EnrichOptions(PipelineOptions):
    """enrich: where PubMed records come from (--input is InputOptions' extract output)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        from transforms.pubmed.eutils import DEFAULT_BASE_URL

        group = parser.add_argument_group("enrich")
        group.add_argument(
            "--medline",
            action="append",
            metavar="GLOB",
            help="MEDLINE/PubMed baseline and update files (pubmed*n*.xml.gz; local, gs://, "
            "s3://); repeat the flag for several globs. A later file (by PubMed's numbering) "
            "replaces an earlier one's record",
        )
        group.add_argument(
            "--eutils",
            action="store_true",
            help="fetch the records from NCBI E-utilities instead (small runs: 3 requests a "
            "second, 10 with an API key)",
        )
        group.add_argument(
            "--ncbi_email",
            help="contact email sent with every E-utilities request, as NCBI asks "
            "(default: $NCBI_EMAIL)",
        )
        group.add_argument(
            "--ncbi_api_key",
            help="NCBI API key: 10 requests a second instead of 3 (default: $NCBI_API_KEY)",
        )
        group.add_argument(
            "--eutils_base_url", default=DEFAULT_BASE_URL, help="E-utilities service to ask"
        )
        group.add_argument(
            "--eutils_cache",
            help="folder (local, gs://, s3://) of fetched records, kept across runs so a rerun "
            "asks only for what is missing (default: <--output>/pubmed_cache, which "
            "--overwrite keeps)",
        )
        group.add_argument(
            "--eutils_max_retries",
            type=int,
            default=5,
            help="retries of a request answered 429, 5xx or not at all, with backoff",
        )
        group.add_argument(
            "--eutils_timeout", type=float, default=30.0, help="seconds to wait for a response"
        )


class RunAllOptions(PipelineOptions):
    """run: what the whole pipeline adds to the stages' own flags."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("run")
        group.add_argument(
            "--stages",
            default="extract,enrich,embed,annotate,shard,index",
            help="the stages to run, in order (enrich runs only with --medline or --eutils)",
        )
        group.add_argument(
            "--since",
            metavar="EARLIER_RUN",
            help="an incremental run: only versions new or changed since that run's watermark "
            "(its newest LastModified), its clustering model reused; writes a dataset of the "
            "new samples and replaces.parquet, the earlier samples they replace",
        )


class DatasetInputOptions(PipelineOptions):
    """index reads a dataset (the output of shard or subset)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument_group("dataset").add_argument(
            "--dataset", help="a dataset: the --output of `biomedica shard` or `subset`"
        )


class IndexOptions(PipelineOptions):
    """index: the vector indexes (faiss) and how good they must be."""

    @classmethod
    def _add_argparse_args(cls, parser):
        from transforms.index.vectors import KINDS, REFINES

        group = parser.add_argument_group("index")
        group.add_argument(
            "--index_type",
            default="auto",
            choices=KINDS,
            help="flat: exact inner product; ivfpq: IVF-PQ trained on a sample, filled in "
            "parallel; auto: flat below --exact_below vectors, ivfpq above",
        )
        group.add_argument(
            "--exact_below",
            type=int,
            default=100_000,
            help="auto: fewer usable vectors than this get an exact (flat) index",
        )
        group.add_argument(
            "--train_sample",
            type=int,
            default=200_000,
            help="ivfpq: vectors k-means trains on (those of smallest key hash)",
        )
        group.add_argument(
            "--nlist",
            type=int,
            default=0,
            help="ivfpq: inverted lists (0: about 4 sqrt(vectors), a power of two, at most "
            "--train_sample / 39)",
        )
        group.add_argument(
            "--pq_m",
            type=int,
            default=0,
            help="ivfpq: PQ bytes per vector, a divisor of the dimension (0: about dimension / 8)",
        )
        group.add_argument(
            "--refine",
            default="sq8",
            choices=REFINES,
            help="ivfpq: codes kept to re-rank the PQ candidates (sq8: a byte per number)",
        )
        group.add_argument(
            "--k_factor",
            type=int,
            default=4,
            help="ivfpq with --refine: candidates re-ranked per hit asked for",
        )
        group.add_argument(
            "--recall_queries",
            type=int,
            default=1000,
            help="dataset vectors (those of smallest key hash) whose exact top-10 measures "
            "the index's recall@10",
        )
        group.add_argument(
            "--recall_target",
            type=float,
            default=0.95,
            help="ivfpq: the smallest nprobe reaching this recall@10 is chosen and recorded",
        )
        group.add_argument(
            "--partition_size",
            type=int,
            default=50_000,
            help="consecutive sample ids encoded together by one worker",
        )


# Numeric flags where a negative value means something (-1: exact duplicates only).
SIGNED = frozenset({"--near_duplicate_threshold"})

OPTIONS_OF = {
    "extract": (ExtractOptions, RunOptions),
    "shard": (InputOptions, ShardOptions, ShardInputOptions, RunOptions, AllowEmpty),
    "subset": (InputOptions, SubsetOptions, ShardOptions, RunOptions, AllowEmpty),
    "embed": (InputOptions, EmbedOptions, RunOptions, AllowEmpty, MaxPixels),
    "annotate": (InputOptions, EmbeddingsInputOptions, AnnotateOptions, RunOptions, AllowEmpty),
    "enrich": (InputOptions, EnrichOptions, RunOptions, AllowEmpty),
    "index": (DatasetInputOptions, EmbeddingsInputOptions, IndexOptions, RunOptions, AllowEmpty),
    # Every stage's flags but those run sets itself (InputOptions, ShardInputOptions); the
    # extract's --allow_empty and --max_pixels are the same flags the others take.
    "run": (
        ExtractOptions,
        EnrichOptions,
        EmbedOptions,
        AnnotateOptions,
        ShardOptions,
        IndexOptions,
        RunOptions,
        RunAllOptions,
    ),
}


def parse(pipeline: str, argv: list[str], description: str = ""):
    """Refuse what `pipeline` does not accept (see pipelines.flags) before any work."""

    def add(parser):
        for cls in OPTIONS_OF[pipeline]:
            cls._add_argparse_args(parser)

    def option_strings(cls) -> set[str]:
        import argparse

        parser = argparse.ArgumentParser(add_help=False)
        cls._add_argparse_args(parser)
        return {o for a in parser._actions for o in a.option_strings}

    mine = set().union(*(option_strings(c) for c in OPTIONS_OF[pipeline]))
    foreign = {}
    for other, classes in OPTIONS_OF.items():
        for cls in classes:
            for flag in option_strings(cls) - mine:
                foreign.setdefault(flag, f"biomedica {other}")
    # The module's summary and usage example; the rest of its docstring is for developers.
    description = "\n\n".join(description.strip().split("\n\n")[:2])
    return flags.parse(pipeline, argv, add, foreign=foreign, description=description, signed=SIGNED)
