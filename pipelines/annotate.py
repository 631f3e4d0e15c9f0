"""`biomedica annotate`: cluster embed's image embeddings and label every figure sample.

    biomedica annotate --input out/run --embeddings out/emb --output out/ann [--clusters 2000]

Writes under --output: annotations/<figure file name> (one row per usable embedding, in the
embeddings file's order), cluster_model-v1.faiss and .json (reusable with --cluster_model),
clusters.json and clusters.parquet (the cluster summary), gallery/ (index.html and
thumbs/), dead_letter/ and run_report.json.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipelines import options as flags
from pipelines.flags import UsageError
from pipelines.options import AnnotateOptions, InputOptions, RunOptions
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
from transforms.annotate import clustering, embedding_rows, labels, steps
from transforms.annotate.steps import COUNTS, LABELS_STAGE, STAGE, STATS
from transforms.annotate.taxonomy import load_taxonomy
from transforms.outcomes import DEAD, dead
from transforms.records import EMBEDDING_MODEL, IMAGE_EMBEDDING
from transforms.sinks import WriteDeadLetters

EMBED_MODEL_FILE = "embed_model.json"
OUTPUT_PARTS = [
    "annotations",
    "gallery",
    "dead_letter",
    "clusters.json",
    "clusters.parquet",
    clustering.MODEL_FILE,
    clustering.META_FILE,
]

log = logging.getLogger(__name__)


def embedding_files(embeddings: str) -> list[str]:
    files = sorted(f.uri for f in storage.glob(storage.join(embeddings, "embeddings", "*.parquet")))
    if not files:
        raise SystemExit(f"no embeddings files at {storage.join(embeddings, 'embeddings')}")
    return files


def embed_info(embeddings: str, files: list[str]) -> dict:
    """embed's embed_model.json; where it is missing, the model id and dimension of the
    first file (with a warning): what every row must match."""
    uri = storage.join(embeddings, EMBED_MODEL_FILE)
    if storage.exists(uri):
        try:
            info = json.loads(storage.read_bytes(uri))
            if isinstance(info, dict) and isinstance(info.get("dim"), int) and info.get("model_id"):
                return info
        except (ValueError, storage.StorageError):
            pass
        raise SystemExit(f"{uri} is not embed's model description (model_id and dim)")
    import pyarrow.parquet as pq

    from transforms.sinks import open_native

    for file in files:
        try:
            schema = pq.read_schema(open_native(file))
            first = pq.ParquetFile(open_native(file)).read_row_group(0, columns=[EMBEDDING_MODEL])
        except Exception:  # noqa: BLE001 (a damaged file is the job's dead letter, not ours)
            continue
        vector = schema.field(IMAGE_EMBEDDING).type
        if first.num_rows and hasattr(vector, "list_size"):
            model_id = first.column(0)[0].as_py()
            log.warning("%s missing: every row must be %s, dim %d", uri, model_id, vector.list_size)
            return {"model_id": model_id, "dim": vector.list_size, "caption": False}
    raise SystemExit(f"{uri} is missing and no embeddings file says which model made it")


def check_values(opts: AnnotateOptions) -> None:
    for flag, value, least in (
        ("clusters", opts.clusters, 1),
        ("pca_dims", opts.pca_dims, 1),
        ("cluster_sample", opts.cluster_sample, 1),
        ("gallery_members", opts.gallery_members, 0),
    ):
        if value < least:
            raise UsageError(f"--{flag} must be at least {least}, got {value}")


def reused_model(uri: str, info: dict) -> dict:
    """--cluster_model read and checked against the embeddings before any work."""
    try:
        data, meta = clustering.read_saved(uri)
        clustering.check_compatible(meta, info["model_id"], info["dim"], uri)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    return steps.model_element(data, meta)


def expert_labels(uri: str | None) -> labels.ExpertLabels | None:
    if not uri:
        return None
    try:
        return labels.parse_expert_labels(storage.read_bytes(uri), load_taxonomy())
    except (OSError, storage.StorageError) as err:
        raise SystemExit(f"--cluster_labels {uri}: cannot read it: {err}") from None
    except ValueError as err:
        raise SystemExit(f"--cluster_labels {uri}: {err}") from None


def warn_if_capped(files: list[str], opts: AnnotateOptions) -> int | None:
    """The launcher says up front when --clusters will be capped (the training step says it
    again with the sample it got). The rows the footers count."""
    counts = [embedding_rows.row_count(f) for f in files]
    rows = sum(c or 0 for c in counts)
    sample = min(opts.cluster_sample, rows)
    capped = clustering.capped_clusters(opts.clusters, sample)
    if not opts.cluster_model and capped < opts.clusters:
        print(
            f"WARNING biomedica annotate: --clusters {opts.clusters} capped to {capped}: the "
            f"training sample holds at most {sample} vectors and each cluster needs at least "
            f"{clustering.MIN_POINTS_PER_CLUSTER}",
            file=sys.stderr,
        )
    return rows if all(c is not None for c in counts) else None


def build(p, opts, source: str, output: str, files, info, model, expert, zero_shot, guard):
    """Wire the steps (see transforms/annotate/steps.py)."""
    figures = storage.join(source, "extract", "figures")
    model_id, dim = info["model_id"], info["dim"]
    units = p | "EmbeddingFiles" >> beam.Create(files)
    read = units | "ReadEmbeddings" >> beam.ParDo(
        steps.ReadEmbeddings(model_id, dim, opts.seed, opts.cluster_sample)
    ).with_outputs(DEAD, COUNTS, main="candidates")
    if model is None:
        model_pc = (
            read["candidates"]
            | "Sample" >> beam.combiners.Top.Smallest(opts.cluster_sample)
            | "Train"
            >> beam.Map(steps.train_model, opts.clusters, opts.pca_dims, opts.seed, model_id, dim)
        )
    else:
        model_pc = p | "SavedModel" >> beam.Create([model])
    model_pc | "SaveModel" >> beam.FlatMap(steps.save_model, output, guard)
    side = {"model": beam.pvalue.AsSingleton(model_pc)}
    if zero_shot:
        prompts = (
            p
            | "Taxonomy" >> beam.Create([None])
            | "EmbedPrompts"
            >> beam.Map(
                lambda _: labels.prompt_matrix(info["model"], info.get("weights"), load_taxonomy())
            )
        )
        side["zero_shot"] = beam.pvalue.AsSingleton(prompts)
    assigned = units | "AssignAndCount" >> beam.ParDo(
        steps.AssignAndCount(figures, model_id, dim, opts.gallery_members), **side
    ).with_outputs(STATS, COUNTS, main="assigned")
    labelled = (
        assigned[STATS]
        | "CombineStats" >> beam.CombinePerKey(steps.CombineStats(opts.gallery_members))
        | "AllClusters" >> beam.combiners.ToList()
        | "Summarise" >> beam.Map(steps.summarise, beam.pvalue.AsSingleton(model_pc), expert, info)
    )
    labelled | "WriteSummary" >> beam.FlatMap(steps.write_summary, output, guard)
    as_labels = beam.pvalue.AsSingleton(labelled)
    written = assigned["assigned"] | "WriteAnnotations" >> beam.ParDo(
        steps.WriteAnnotations(output, guard), as_labels
    )
    thumbnails = units | "WriteThumbnails" >> beam.ParDo(
        steps.WriteThumbnails(figures, output, guard), as_labels
    )

    dead_letters = [read[DEAD]]
    if expert is not None:
        bad = [
            dead(LABELS_STAGE, key, reason, detail, opts.cluster_labels)
            for key, reason, detail in expert.bad
        ]
        dead_letters.append(p | "BadLabels" >> beam.Create([b.value for b in bad]))
    dead_letters = dead_letters | "AllDead" >> beam.Flatten()
    dead_letters | "WriteDead" >> WriteDeadLetters(storage.join(output, "dead_letter"), guard=guard)

    counts = [
        read[COUNTS],
        assigned[COUNTS],
        written | "Out" >> beam.Map(lambda n: (f"{STAGE}.out", n)),
        thumbnails,
        dead_letters | "DeadCounts" >> beam.FlatMap(report.dead_letter_counts),
        model_pc | "ModelCounts" >> beam.FlatMap(steps.model_counts, model is None),
        labelled | "LabelCounts" >> beam.FlatMap(lambda s: s["counts"]),
    ]
    if expert is not None:
        entries = len(expert.labels) + len(expert.bad)
        counts.append(p | "LabelsIn" >> beam.Create([(f"{LABELS_STAGE}.in", entries)]))
    return counts | "AllCounts" >> beam.Flatten()


def run(argv=None, test_pipeline=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    flags.parse("annotate", argv, __doc__)
    options = PipelineOptions(argv)
    run_options = options.view_as(RunOptions)
    opts = options.view_as(AnnotateOptions)
    source = options.view_as(InputOptions).input
    missing = [
        f"--{name}"
        for name, value in (
            ("input", source),
            ("embeddings", opts.embeddings),
            ("output", run_options.output),
        )
        if not value
    ]
    if missing:
        raise UsageError("missing " + ", ".join(missing))
    check_values(opts)
    output = run_options.output
    refuse_overlap(output, input=source, embeddings=opts.embeddings)
    options.view_as(SetupOptions).save_main_session = False

    # Everything that can refuse the run does so before the output is touched.
    files = embedding_files(opts.embeddings)
    info = embed_info(opts.embeddings, files)
    model = reused_model(opts.cluster_model, info) if opts.cluster_model else None
    expert = expert_labels(opts.cluster_labels)
    zero_shot, why = labels.zero_shot_allowed(info)
    rows = warn_if_capped(files, opts)
    stage_terms = {STAGE: ("out", "dead_letter")}
    if expert is not None:
        stage_terms[LABELS_STAGE] = ("out", "outside_clustering", "dead_letter")
    header = {
        "pipeline": "annotate",
        "input": source,
        "embeddings": opts.embeddings,
        "output": output,
        "embedding_model": info["model_id"],
        "random_weights": bool(info.get("random_weights", False)),
        "zero_shot": why,
        "cluster_model": opts.cluster_model or "trained",
        "parameters": {
            "clusters": opts.clusters,
            "pca_dims": opts.pca_dims,
            "cluster_sample": opts.cluster_sample,
            "cluster_labels": opts.cluster_labels,
            "gallery_members": opts.gallery_members,
            "seed": opts.seed,
        },
    }

    p = make_pipeline(options, test_pipeline)
    run_id = run_lock.new_run_id()
    guard = run_lock.Guard(output, run_id)
    counts = build(p, opts, source, output, files, info, model, expert, zero_shot, guard)
    counts | "RunReport" >> report.WriteRunReport(storage.join(output, REPORT), stage_terms, header)
    with output_lock(output, run_id) as lock:
        prepare_output(output, REPORT, run_options.overwrite, OUTPUT_PARTS)
        print(f"biomedica annotate: {why}", file=sys.stderr)  # said once the run starts
        shown = progress(run_options.log_level, "annotate", ["embeddings", "annotations"], rows)
        return run_and_report(p, output, time.time(), [], lock, shown)


main = main_of(run, "annotate")


if __name__ == "__main__":
    sys.exit(main())
