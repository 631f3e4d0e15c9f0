"""`biomedica embed`: image (and caption) embeddings of every figure of an extract output.

    biomedica embed --input out/run --output out/emb [--model open_clip:ViT-B-32 --weights W]

Writes under --output: embeddings/<figure file name> (one Parquet file per figure file, its
rows in the figure file's order: key, model, image_embedding, caption_embedding for models
with a text tower), embed_model.json, dead_letter/*.jsonl and run_report.json.
"""

from __future__ import annotations

import logging
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, S3Options

from pipelines.flags import UsageError
from pipelines.options import EmbedOptions
from pipelines.runner import (
    REPORT,
    figure_files,
    figure_inputs,
    job_options,
    main_of,
    make_pipeline,
    nothing_selected,
    output_lock,
    prepare_output,
    progress,
    run_and_report,
)
from transforms import report, run_lock, storage
from transforms.embed import accelerator as gpu
from transforms.embed import files, models
from transforms.embed.files import STAGE
from transforms.outcomes import DEAD
from transforms.shard.write_shards import count_rows
from transforms.sinks import WriteDeadLetters

OUTPUT_PARTS = [files.EMBEDDINGS_DIR, "dead_letter", files.MODEL_FILE]
EMBED_STAGES = {STAGE: ("out", "dead_letter")}


def embed_inputs(source: str, allow_empty: bool) -> list[str]:
    """The figure files to embed, sorted. None is an error (an extract that found nothing
    new writes none) unless --allow_empty; two with one name would write one file."""
    uris = sorted(
        f.uri for f in figure_inputs(figure_files(source), allow_empty, "an empty output")
    )
    seen: dict[str, str] = {}
    for uri in uris:
        name = files.embeddings_name(uri)
        if name in seen:
            raise UsageError(
                f"--input {source}: {seen[name]} and {uri} have one name; their embeddings "
                "files would collide (embed one folder at a time)"
            )
        seen[name] = uri
    return uris


def handler_of(options: PipelineOptions, max_pixels: int = models.MAX_PIXELS):
    """The model handler --model/--weights/--device/--batch_size name; flag problems are
    UsageErrors (one line, before any work)."""
    embed = options.view_as(EmbedOptions)
    if embed.batch_size < 1:
        raise UsageError(f"--batch_size must be at least 1, not {embed.batch_size}")
    if max_pixels < 1:
        raise UsageError(f"--max_pixels must be at least 1, not {max_pixels}")
    s3 = storage.S3Config(endpoint_url=options.view_as(S3Options).s3_endpoint_url or None)
    try:
        spec = models.parse_model(embed.model)
        weights = models.parse_weights(spec, embed.weights)
        models.check_weights(weights, s3)
        models.check_architecture(spec, weights)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if weights.random:
        if spec.backend != "pixels":
            logging.warning(
                "--weights none: %s runs with random weights; embed_model.json and the run "
                "report say random_weights: true",
                spec.given,
            )
    # Imported here: Beam's RunInference imports torch (seconds), which --help and flag
    # errors do without.
    from transforms.embed.handlers import EmbedHandler

    return EmbedHandler(
        embed.model, weights.given, embed.device, embed.batch_size, s3, max_pixels=max_pixels
    )


def accelerator_of(options: PipelineOptions) -> str | None:
    """--accelerator as the resource hint it becomes (None when not given); with it, the
    job runs one SDK process per worker, so that each GPU holds one model
    (transforms.embed.accelerator). A malformed hint is a flag problem."""
    given = options.view_as(EmbedOptions).accelerator
    if not given:
        return None
    try:
        hint = gpu.parse_accelerator(given)
    except ValueError as err:
        raise UsageError(str(err)) from None
    options.view_as(DebugOptions).add_experiment(gpu.ONE_SDK_PROCESS)
    return hint


def fingerprint_of(handler) -> str:
    """embed_model.json's weights_fingerprint (models.weights_fingerprint), before any work:
    a checkpoint that cannot be read is a flag problem."""
    try:
        return models.weights_fingerprint(handler.model, handler.weights, handler.s3)
    except (OSError, ValueError) as err:
        raise UsageError(f"--weights {handler.weights}: cannot be read ({err})") from None


def build(
    p: beam.Pipeline,
    uris: list[str],
    source: str,
    output: str,
    handler,
    guard: run_lock.Guard | None = None,
    fingerprint: str = "",
    accelerator: str | None = None,
) -> None:
    """Wire the stage, its dead letters and the run report (`handler`: an EmbedHandler;
    `fingerprint`: its weights_fingerprint; `accelerator`: the resource hint of the embed
    stage alone, from accelerator_of)."""
    from transforms.embed.stage import EmbedFigures

    random = handler.weights == "none" and handler.model != "pixels"
    extra = {"weights_fingerprint": fingerprint}
    stage_transform = EmbedFigures(output, handler, source, guard, extra)
    if accelerator:
        # The whole stage, reads included: its images then never cross to a GPU worker.
        stage_transform = stage_transform.with_resource_hints(accelerator=accelerator)
    stage = p | "FigureFiles" >> beam.Create(uris) | "EmbedStage" >> stage_transform
    stage[DEAD] | "WriteDead" >> WriteDeadLetters(storage.join(output, "dead_letter"), guard=guard)
    counts = (
        stage["in"] | "In" >> beam.Map(lambda n: (f"{STAGE}.in", n)),
        stage["written"] | "Out" >> beam.Map(lambda n: (f"{STAGE}.out", n)),
        stage["written"] | "FilesOut" >> beam.Map(lambda _: (f"{STAGE}.files_written", 1)),
        stage[DEAD] | "DeadCounts" >> beam.FlatMap(report.dead_letter_counts),
    )
    header = {
        "pipeline": "embed",
        "input": source,
        "output": output,
        "parameters": {
            "model": handler.model,
            "weights": handler.weights,
            "random_weights": random,
            "weights_fingerprint": fingerprint,
            "max_pixels": handler.max_pixels,
            "batch_size": handler.batch_size,
            "device": handler.device,
            "figure_files": len(uris),
            **({"accelerator": accelerator} if accelerator else {}),
        },
    }
    (
        counts
        | "AllCounts" >> beam.Flatten()
        | "RunReport" >> report.WriteRunReport(storage.join(output, REPORT), EMBED_STAGES, header)
    )


def run(argv=None, test_pipeline=None, handler=None) -> dict:
    """Run the embed pipeline; returns the run report (also printed). `handler` (tests)
    replaces the one the flags name."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # allow_empty, max_pixels: in the parsed flags (not Beam's)
    given, options, opts, source = job_options("embed", argv, __doc__)
    accelerator = accelerator_of(options)
    handler = handler or handler_of(options, given.max_pixels)
    fingerprint = fingerprint_of(handler)
    uris = embed_inputs(source, given.allow_empty)
    p = make_pipeline(options, test_pipeline)
    run_id = run_lock.new_run_id()
    guard = run_lock.Guard(opts.output, run_id)
    build(p, uris, source, opts.output, handler, guard, fingerprint, accelerator)
    with output_lock(opts.output, run_id) as lock:
        prepare_output(opts.output, REPORT, opts.overwrite, OUTPUT_PARTS)
        shown = progress(opts.log_level, "embed", ["figures"], count_rows(uris))
        result = run_and_report(p, opts.output, time.time(), [], lock, shown)
    return nothing_selected(result, STAGE, "no figure was embedded", given.allow_empty)


main = main_of(run, "embed")


if __name__ == "__main__":
    sys.exit(main())
