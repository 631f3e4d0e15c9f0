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
import posixpath
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipelines import options as flags
from pipelines.flags import UsageError, require_at_least
from pipelines.options import AnnotateOptions, EmbeddingsInputOptions, InputOptions, RunOptions
from pipelines.runner import (
    REPORT,
    input_layout,
    main_of,
    make_pipeline,
    output_lock,
    prepare_output,
    progress,
    refuse_linked_overlap,
    refuse_overlap,
    run_and_report,
)
from transforms import report, run_lock, storage
from transforms.annotate import clustering, figure_rows, labels, steps
from transforms.annotate.steps import CLUSTERING, COUNTS, GALLERY, LABELS_STAGE, STAGE, STATS
from transforms.annotate.taxonomy import load_taxonomy
from transforms.outcomes import DEAD, dead
from transforms.records import EMBEDDING_MODEL, IMAGE_EMBEDDING
from transforms.sinks import WriteDeadLetters, footer_rows, read_parquet

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
    return sorted(f.uri for f in storage.glob(storage.join(embeddings, "embeddings", "*.parquet")))


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
    for file in files:
        try:  # read_parquet closes the file, whatever happens
            first = next(read_parquet(file, columns=[EMBEDDING_MODEL, IMAGE_EMBEDDING]))
        except Exception:  # noqa: BLE001 (a damaged file is the job's dead letter, not ours)
            continue
        vector = first.schema.field(IMAGE_EMBEDDING).type if first.num_columns == 2 else None
        if first.num_rows and hasattr(vector, "list_size"):
            model_id = first.column(0)[0].as_py()
            log.warning("%s missing: every row must be %s, dim %d", uri, model_id, vector.list_size)
            return {"model_id": model_id, "dim": vector.list_size, "caption": False}
    raise SystemExit(f"{uri} is missing and no embeddings file says which model made it")


def _keys(uri: str) -> list | None:
    """The keys of an embeddings file's rows (None where it cannot be read: the job
    dead-letters it)."""
    try:
        return [k for t in read_parquet(uri, columns=["key"]) for k in t.column(0).to_pylist()]
    except Exception:  # noqa: BLE001
        return None


# Embeddings files whose keys the launcher checks against their figure files before work:
# a few, spread over the input (all of them would be thousands of reads on a Dataflow
# launcher at PMC's scale). The job checks every key; a key it finds in no figure row fails
# the run (see no_figure_rows).
KEY_CHECK_FILES = 16


def figures_folder(source: str) -> str:
    """The figures folder of --input: an extract output's own, or the one an enrich
    output links to (a stale link refused in one line)."""
    found = input_layout(source)
    return storage.join(source, "extract", "figures") if found is None else found.figures


def check_figures(files: list[str], figures: str) -> int | None:
    """Before work: every embeddings file has its figure file of the same name in the
    figures folder of --input (figures_folder), and the keys of a sample of them
    (KEY_CHECK_FILES, key columns alone) are rows of those figure files, so the captions and
    thumbnails come from the figures embed saw. Refuses in one line otherwise; returns the
    embeddings' row count from the footers (None where a file is unreadable)."""
    present = {posixpath.basename(f.uri) for f in storage.glob(storage.join(figures, "*"))}
    missing = [f for f in files if posixpath.basename(f) not in present]
    if missing:
        name = posixpath.basename(missing[0])
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SystemExit(
            f"{storage.join(figures, name)} is missing: embed made {missing[0]}{more} from it; "
            "pass as --input the extract output that embed read"
        )
    counts = [footer_rows(file) for file in files]
    rows = None if None in counts else sum(counts)
    step = max(1, -(-len(files) // KEY_CHECK_FILES))
    absent, example, where = 0, None, None
    for file in files[::step]:
        keys = _keys(file)
        if keys is None:
            continue
        figure = storage.join(figures, posixpath.basename(file))
        try:
            known = figure_rows.keys(figure)
        except Exception:  # noqa: BLE001 (not a Parquet file at all: none of its keys known)
            known = set()
        lost = {k for k in keys if isinstance(k, str)} - known
        if lost:
            absent += len(lost)
            if example is None:
                example, where = min(lost), figure
    if absent:
        raise SystemExit(
            f"{absent} embedded samples are not in the figure files of --input (e.g. {example} "
            f"is not in {where}): pass as --input the extract output that embed read"
        )
    return rows


def refuse_empty(embeddings: str, files: list[str], rows: int | None, allow_empty: bool) -> None:
    """An embed output with nothing to annotate is refused before work, unless --allow_empty
    (then the run writes an empty, balanced output)."""
    if allow_empty or (files and rows != 0):
        return
    what = "no embeddings files" if not files else f"{len(files)} embeddings files with no rows"
    raise SystemExit(
        f"--embeddings {embeddings} holds {what} (`biomedica embed --allow_empty` writes that "
        "from an empty extract); pass --allow_empty to write an empty annotate output"
    )


def check_zero_shot_weights(embeddings: str, info: dict) -> None:
    """Zero-shot embeds the taxonomy's prompts with embed's own weights: a checkpoint that
    is gone is said now, not by every worker mid-run."""
    from transforms.embed.models import check_weights, parse_model, parse_weights

    try:
        weights = parse_weights(parse_model(info.get("model", "")), info.get("weights"))
        check_weights(weights)
    except ValueError as err:
        detail = str(err).split(": ", 1)[-1]
        raise SystemExit(
            f"{storage.join(embeddings, EMBED_MODEL_FILE)}'s weights {info.get('weights')!r}: "
            f"{detail} (zero-shot embeds the taxonomy's prompts with them)"
        ) from None


def check_values(opts: AnnotateOptions) -> None:
    require_at_least(
        (
            ("clusters", opts.clusters, 1),
            ("pca_dims", opts.pca_dims, 1),
            ("cluster_sample", opts.cluster_sample, 1),
            ("gallery_members", opts.gallery_members, 0),
        )
    )


def reused_model(uri: str, info: dict) -> dict:
    """--cluster_model read and checked against the embeddings before any work."""
    try:
        data, meta = clustering.read_saved(uri)
        clustering.check_compatible(
            meta, info["model_id"], info["dim"], uri, info.get("weights_fingerprint")
        )
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


def warn_if_capped(rows: int | None, opts: AnnotateOptions) -> None:
    """The launcher says up front when --clusters will be capped (the training step says it
    again with the sample it got)."""
    sample = min(opts.cluster_sample, rows or 0)
    capped = clustering.capped_clusters(opts.clusters, sample)
    if not opts.cluster_model and rows and capped < opts.clusters:
        print(
            f"WARNING biomedica annotate: --clusters {opts.clusters} capped to {capped}: the "
            f"training sample holds at most {sample} vectors and each cluster needs at least "
            f"{clustering.MIN_POINTS_PER_CLUSTER}",
            file=sys.stderr,
        )


def build(p, opts, figures: str, output: str, files, info, model, expert, zero_shot, guard):
    """Wire the steps (see transforms/annotate/steps.py); `figures`: figures_folder."""
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
            >> beam.Map(
                steps.train_model,
                opts.clusters,
                opts.pca_dims,
                opts.seed,
                model_id,
                dim,
                info.get("weights_fingerprint"),
            )
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
    ).with_outputs(DEAD, main="counts")

    dead_letters = [read[DEAD], thumbnails[DEAD]]
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
        thumbnails["counts"],
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
    given = flags.parse("annotate", argv, __doc__)  # allow_empty: in the parsed flags
    options = PipelineOptions(argv)
    run_options = options.view_as(RunOptions)
    opts = options.view_as(AnnotateOptions)
    embeddings = options.view_as(EmbeddingsInputOptions).embeddings
    source = options.view_as(InputOptions).input
    missing = [
        f"--{name}"
        for name, value in (
            ("input", source),
            ("embeddings", embeddings),
            ("output", run_options.output),
        )
        if not value
    ]
    if missing:
        raise UsageError("missing " + ", ".join(missing))
    check_values(opts)
    output = run_options.output
    refuse_overlap(output, input=source, embeddings=embeddings)
    refuse_linked_overlap(output, source)
    options.view_as(SetupOptions).save_main_session = False

    # Everything that can refuse the run does so before the output is touched.
    allow_empty = given.allow_empty
    files = embedding_files(embeddings)
    figures = figures_folder(source)
    rows = check_figures(files, figures)
    refuse_empty(embeddings, files, rows, allow_empty)
    info = embed_info(embeddings, files)
    model = reused_model(opts.cluster_model, info) if opts.cluster_model else None
    expert = expert_labels(opts.cluster_labels)
    zero_shot, why = labels.zero_shot_allowed(info)
    if zero_shot:
        check_zero_shot_weights(embeddings, info)
    warn_if_capped(rows, opts)
    stage_terms = {
        STAGE: ("out", "dead_letter"),
        CLUSTERING: ("out",),
        GALLERY: ("out", "dead_letter"),
    }
    if expert is not None:
        stage_terms[LABELS_STAGE] = ("out", "outside_clustering", "dead_letter")
    header = {
        "pipeline": "annotate",
        "input": source,
        "embeddings": embeddings,
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
    counts = build(p, opts, figures, output, files, info, model, expert, zero_shot, guard)
    counts | "RunReport" >> report.WriteRunReport(storage.join(output, REPORT), stage_terms, header)
    with output_lock(output, run_id) as lock:
        prepare_output(output, REPORT, run_options.overwrite, OUTPUT_PARTS)
        print(f"biomedica annotate: {why}", file=sys.stderr)  # said once the run starts
        shown = progress(run_options.log_level, "annotate", ["embeddings", "annotations"], rows)
        result = run_and_report(p, output, time.time(), [], lock, shown)
    return no_figure_rows(nothing_annotated(result, allow_empty))


def nothing_annotated(result: dict, allow_empty: bool) -> dict:
    """A run whose rows were all dead letters wrote no label: an error unless
    --allow_empty (its dead letters and report are written either way)."""
    if result.get("stages", {}).get(STAGE, {}).get("out") == 0 and not result.get("submitted"):
        if allow_empty:
            print("biomedica annotate: nothing annotated (--allow_empty)", file=sys.stderr)
        else:
            result["error"] = (
                "nothing annotated: no usable embedding (see dead_letter/); pass --allow_empty "
                "if that is expected"
            )
    return result


def no_figure_rows(result: dict) -> dict:
    """Embedded samples the job found in no figure row of --input (the launcher checks only
    a sample of files): annotated without captions or thumbnails, so the run fails."""
    missing = result.get("stages", {}).get(STAGE, {}).get("no_figure_row", 0)
    if missing and not result.get("error"):
        result["error"] = (
            f"{missing} embedded samples are not in the figure files of --input (annotated "
            "without caption votes or thumbnails); pass as --input the extract output that "
            "embed read"
        )
    return result


main = main_of(run, "annotate")


if __name__ == "__main__":
    sys.exit(main())
