"""`biomedica index`: a search index over a dataset, for `biomedica serve`.

    biomedica index --dataset out/ds --embeddings out/emb --output out/idx

Writes under --output: image.faiss (and caption.faiss where the embeddings have caption
vectors; faiss ids are sample ids), samples.sqlite (the samples table and the FTS5 keyword
index), manifest.json (written last), dead_letter/ and run_report.json.

The vector index is exact (flat) for a small dataset and IVF-PQ above --exact_below: trained
in one process on a deterministic sample, filled in parallel (each worker encodes a
partition of consecutive ids), assembled in id order, its nprobe chosen by measured recall.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipelines import options as flags
from pipelines.flags import UsageError, require_at_least
from pipelines.options import (
    DatasetInputOptions,
    EmbeddingsInputOptions,
    IndexOptions,
    RunOptions,
)
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
from transforms import report, run_lock, storage
from transforms.index import join, layout, steps
from transforms.index.ids import shard_ids, total_samples
from transforms.outcomes import DEAD
from transforms.sinks import WriteDeadLetters

DATASET_MANIFEST = "manifest.json"
EMBED_MODEL_FILE = "embed_model.json"
SEED = 0  # k-means, the training sample and the recall queries: fixed, recorded
OUTPUT_PARTS = [
    layout.MANIFEST,
    layout.faiss_file(layout.IMAGE),
    layout.faiss_file(layout.CAPTION),
    layout.SQLITE,
    layout.WORK,
    "dead_letter",
]
STAGE_TERMS = {
    join.STAGE: ("out", "dead_letter"),
    join.EMBEDDINGS_STAGE: ("out", "dead_letter"),
    join.KEYWORD_STAGE: ("out",),
}


def check_values(opts: IndexOptions) -> None:
    require_at_least(
        (
            ("exact_below", opts.exact_below, 0),
            ("train_sample", opts.train_sample, 1),
            ("nlist", opts.nlist, 0),
            ("pq_m", opts.pq_m, 0),
            ("k_factor", opts.k_factor, 1),
            ("recall_queries", opts.recall_queries, 1),
            ("partition_size", opts.partition_size, 1),
        )
    )
    if not 0 < opts.recall_target <= 1:
        raise UsageError(f"--recall_target must be in (0, 1], got {opts.recall_target}")


def read_json(uri: str, flag: str, what: str) -> tuple[dict, bytes]:
    """A JSON file an input must hold; its absence or damage refused in one line (exit 2)."""
    if not storage.exists(uri):
        raise UsageError(f"{flag}: {uri} is missing: {what}")
    data = storage.read_bytes(uri)
    try:
        value = json.loads(data)
    except ValueError:
        raise UsageError(f"{flag}: {uri} is not JSON: {what}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag}: {uri} is not a JSON object: {what}")
    return value, data


def embed_model(embeddings: str) -> dict:
    info, _ = read_json(
        storage.join(embeddings, EMBED_MODEL_FILE),
        "--embeddings",
        "pass the --output of `biomedica embed`",
    )
    if not isinstance(info.get("dim"), int) or info["dim"] < 1 or not info.get("model_id"):
        raise UsageError(f"--embeddings: {EMBED_MODEL_FILE} has no model_id and dim")
    return info


def settings_of(opts: IndexOptions) -> dict:
    return {
        "index_type": opts.index_type,
        "exact_below": opts.exact_below,
        "train_sample": opts.train_sample,
        "nlist": opts.nlist,
        "pq_m": opts.pq_m,
        "refine": opts.refine,
        "k_factor": opts.k_factor,
        "recall_queries": opts.recall_queries,
        "recall_target": opts.recall_target,
        "partition_size": opts.partition_size,
        "seed": SEED,
    }


def check_plan(settings: dict, dim: int) -> None:
    """A --pq_m that cannot divide the dimension is refused before work."""
    if settings["pq_m"] and dim % settings["pq_m"]:
        raise UsageError(f"--pq_m {settings['pq_m']} does not divide the vectors' dimension {dim}")


def build(p, dataset: str, shards: list, files: list[str], info: dict, settings: dict, **where):
    """Wire the steps (see transforms/index/steps.py); returns the report's counts."""
    output, header, guard = where["output"], where["header"], where["guard"]
    dim, caption = int(info["dim"]), bool(info.get("caption"))
    samples = total_samples({"shards": [{"samples": s[3]} for s in shards]})
    read_ids = (
        p
        | "DatasetShards" >> beam.Create(shards)
        | "ReadSampleIds"
        >> beam.ParDo(steps.ReadSampleIds(dataset)).with_outputs(steps.COUNTS, main="ids")
    )
    read_rows = (
        p
        | "EmbeddingFiles" >> beam.Create(files)
        | "ReadEmbeddings"
        >> beam.ParDo(steps.ReadEmbeddings(info["model_id"], dim, caption)).with_outputs(
            DEAD, steps.COUNTS, main="rows"
        )
    )
    joined = (
        {"samples": read_ids["ids"], "rows": read_rows["rows"]}
        | "ByKey" >> beam.CoGroupByKey()
        | "JoinVectors"
        >> beam.ParDo(steps.JoinVectors(settings["partition_size"], SEED)).with_outputs(
            DEAD, steps.COUNTS, steps.TRAIN, steps.QUERIES, main="vectors"
        )
    )
    count = joined["vectors"] | "CountVectors" >> beam.combiners.Count.Globally()
    trained = (
        joined[steps.TRAIN]
        | "TrainSample" >> beam.combiners.Top.Smallest(settings["train_sample"])
        | "Train"
        >> beam.Map(steps.train_indexes, beam.pvalue.AsSingleton(count), caption, dim, settings)
    )
    queries = (
        joined[steps.QUERIES]
        | "QuerySample" >> beam.combiners.Top.Smallest(max(1, settings["recall_queries"]))
        | "Queries"
        >> beam.Map(
            lambda c, n: steps.query_matrices(c[:n], caption, dim), settings["recall_queries"]
        )
    )
    encoded = (
        joined["vectors"]
        | "Partitions" >> beam.GroupByKey()
        | "Encode"
        >> beam.ParDo(
            steps.EncodePartition(output, caption, dim),
            beam.pvalue.AsSingleton(trained),
            beam.pvalue.AsSingleton(queries),
        ).with_outputs(steps.TOPS, main="records")
    )
    tops = encoded[steps.TOPS] | "ExactTop10" >> beam.CombinePerKey(steps.MergeTops())
    records = beam.pvalue.AsList(encoded["records"])
    entries = (
        p
        | "Kinds" >> beam.Create(steps.kinds(caption))
        | "Assemble"
        >> beam.FlatMap(
            steps.assemble,
            beam.pvalue.AsSingleton(trained),
            records,
            beam.pvalue.AsDict(tops),
            beam.pvalue.AsSingleton(queries),
            output,
            settings["recall_target"],
            guard,
        )
    )
    keyword_done = (
        p
        | "KeywordIndex" >> beam.Create([layout.SQLITE])
        | "BuildSqlite"
        >> beam.FlatMap(
            steps.build_keyword, dataset, shards, samples, records, caption, output, guard
        )
    )
    (
        p
        | "Manifest" >> beam.Create([layout.MANIFEST])
        | "WriteManifest"
        >> beam.FlatMap(
            steps.write_manifest,
            beam.pvalue.AsList(entries),
            beam.pvalue.AsSingleton(keyword_done),
            header,
            output,
            guard,
        )
    )
    dead_letters = (read_rows[DEAD], joined[DEAD]) | "AllDead" >> beam.Flatten()
    dead_letters | "WriteDead" >> WriteDeadLetters(storage.join(output, "dead_letter"), guard=guard)
    return (
        read_ids[steps.COUNTS],
        read_rows[steps.COUNTS],
        joined[steps.COUNTS],
        keyword_done | "KeywordCounts" >> beam.FlatMap(lambda k: k["counts"]),
        dead_letters | "DeadCounts" >> beam.FlatMap(report.dead_letter_counts),
    ) | "AllCounts" >> beam.Flatten()


def run(argv=None, test_pipeline=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    given = flags.parse("index", argv, __doc__)
    options = PipelineOptions(argv)
    run_options = options.view_as(RunOptions)
    opts = options.view_as(IndexOptions)
    dataset = options.view_as(DatasetInputOptions).dataset
    embeddings = options.view_as(EmbeddingsInputOptions).embeddings
    output = run_options.output
    missing = [
        f"--{name}"
        for name, value in (("dataset", dataset), ("embeddings", embeddings), ("output", output))
        if not value
    ]
    if missing:
        raise UsageError("missing " + ", ".join(missing))
    check_values(opts)
    refuse_overlap(output, dataset=dataset, embeddings=embeddings)
    options.view_as(SetupOptions).save_main_session = False

    # Everything that can refuse the run does so before the output is touched.
    manifest, manifest_data = read_json(
        storage.join(dataset, DATASET_MANIFEST),
        "--dataset",
        "pass the --output of `biomedica shard` or `subset`",
    )
    info = embed_model(embeddings)
    settings = settings_of(opts)
    check_plan(settings, int(info["dim"]))
    shards = [
        (s.shard, s.parquet_path, s.base, s.samples) for s in shard_ids(manifest) if s.samples > 0
    ]
    samples = total_samples(manifest)
    if samples == 0 and not given.allow_empty:
        raise UsageError(
            f"--dataset: {dataset} holds no samples (its manifest.json lists none): nothing to "
            "index; pass --allow_empty to write an empty index"
        )
    files = sorted(f.uri for f in storage.glob(storage.join(embeddings, "embeddings", "*.parquet")))
    header = {
        "dataset": dataset,
        "dataset_sha256": hashlib.sha256(manifest_data).hexdigest(),
        "embeddings": embeddings,
        "model": info,
        "samples": samples,
        "parameters": settings,
    }
    report_header = {
        "pipeline": "index",
        "dataset": dataset,
        "embeddings": embeddings,
        "output": output,
        "embedding_model": info["model_id"],
        "random_weights": bool(info.get("random_weights", False)),
        "parameters": settings,
    }

    p = make_pipeline(options, test_pipeline)
    run_id = run_lock.new_run_id()
    guard = run_lock.Guard(output, run_id)
    counts = build(
        p, dataset, shards, files, info, settings, output=output, header=header, guard=guard
    )
    counts | "RunReport" >> report.WriteRunReport(
        storage.join(output, REPORT), STAGE_TERMS, report_header
    )
    with output_lock(output, run_id) as lock:
        prepare_output(output, REPORT, run_options.overwrite, OUTPUT_PARTS)
        shown = progress(run_options.log_level, "index", ["samples", "vectors"], samples)
        result = run_and_report(p, output, time.time(), [layout.WORK], lock, shown)
    return no_vectors(result, given.allow_empty)


def no_vectors(result: dict, allow_empty: bool) -> dict:
    """A run where no sample got a vector wrote empty vector indexes: an error unless
    --allow_empty (the keyword index, dead letters and report are written either way)."""
    if result.get("stages", {}).get(join.STAGE, {}).get("out") == 0 and not result.get("submitted"):
        if allow_empty:
            print("biomedica index: no sample has a vector (--allow_empty)", file=sys.stderr)
        else:
            result["error"] = (
                "no sample has a usable vector (see dead_letter/); pass --allow_empty if that "
                "is expected"
            )
    return result


main = main_of(run, "index")


if __name__ == "__main__":
    sys.exit(main())
