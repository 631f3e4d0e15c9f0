"""The embed stage as a composite PTransform: figure files in, embeddings files out.

    figure file names | Reshuffle | read rows (key, image, caption)
        | RunInference(KeyedModelHandler(EmbedHandler)) | group by figure file
        | one embeddings file per figure file, in its row order

Every figure row read ends as one embeddings row or one dead letter (stage "embed"); a
figure file that cannot be opened is one dead letter keyed by the file (`unit_unreadable`),
counted as one input; a row group that cannot be read is one such dead letter per row,
keyed by its key (or `<file>#<row>` where even the key column does not read).
`embed_model.json` is written once every embeddings file is in place.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from transforms import storage
from transforms.embed import files
from transforms.embed.files import STAGE
from transforms.embed.handlers import EmbedHandler
from transforms.outcomes import DEAD, dead

UNIT_UNREADABLE = "unit_unreadable"
MARKERS = "files"  # tag: a figure file that opened, so an embeddings file is due
IN = "in"  # tag: one per input counted (rows read, unreadable parts)


class _ReadFigureFile(beam.DoFn):
    """A figure file's rows as keyed examples ((file, row index, key), (image, caption))."""

    def process(self, uri: str):
        opened = False
        for item in files.read_rows(uri):
            if isinstance(item, files.Unreadable):
                yield beam.pvalue.TaggedOutput(IN, 1)
                if item.index is None:  # the whole file
                    yield dead(STAGE, uri, UNIT_UNREADABLE, item.detail, uri)
                    return
                key = item.key or f"{uri}#{item.index}"
                yield dead(STAGE, key, UNIT_UNREADABLE, f"row {item.index}: {item.detail}", uri)
                continue
            if not opened:
                opened = True
                yield beam.pvalue.TaggedOutput(MARKERS, uri)
            yield beam.pvalue.TaggedOutput(IN, 1)
            yield (item.file, item.index, item.key), (item.image, item.caption)
        if not opened:  # a file of no rows (or only unreadable groups) still gets its file
            yield beam.pvalue.TaggedOutput(MARKERS, uri)


def _split(result):
    """(file, (row, key, image, caption)) for a result with vectors; a dead letter else."""
    (uri, row, key), embedded = result
    if embedded.ok:
        yield uri, (row, key, embedded.image, embedded.caption)
    else:
        detail = f"row {row}: {embedded.detail}"
        yield dead(STAGE, key or f"{uri}#{row}", embedded.reason, detail, uri)


class _WriteEmbeddings(beam.DoFn):
    def __init__(self, directory: str, guard=None):
        self.directory, self.guard = directory, guard

    def process(self, element, info: dict):
        uri, items = element
        rows = [item for item in items if item is not None]
        table = files.embeddings_table(rows, info["model_id"], info["dim"], info["caption"])
        files.write_table(table, self.directory, files.embeddings_name(uri), self.guard)
        yield len(rows)


def _shape(result) -> list[tuple[int, bool]]:
    _, embedded = result
    return [(len(embedded.image), embedded.caption is not None)] if embedded.ok else []


class _Shapes(beam.CombineFn):
    """The distinct (dim, caption) shapes of the results, sorted: one combine, where
    Distinct and ToList would add a dozen steps (each costs every run set-up time)."""

    def create_accumulator(self):
        return set()

    def add_input(self, shapes, result):
        shapes.update(_shape(result))
        return shapes

    def merge_accumulators(self, accumulators):
        return set().union(*accumulators)

    def extract_output(self, shapes):
        return sorted(shapes)


def _describe(shapes: list, handler: EmbedHandler) -> dict:
    """The model's id, dim and text tower, as the embeddings show them; a run that
    embedded nothing loads the model once more, on the CPU, to name them."""
    from transforms.embed.models import load_embedder, parse_model, parse_weights

    spec = parse_model(handler.model)
    if shapes:
        dim, caption = min(shapes)
        random = spec.backend != "pixels" and parse_weights(spec, handler.weights).random
        return {"model_id": spec.model_id, "dim": dim, "caption": caption, "random_weights": random}
    load = handler.loader or load_embedder
    return load(handler.model, handler.weights, "cpu", 1, handler.s3).describe()


def _write_model_file(_, info: dict, output: str, record: dict, guard=None):
    if guard is not None:
        guard()
    body = files.model_record(
        record["model"], record["weights"], info, record["input"], record.get("extra")
    )
    storage.atomic_write(storage.join(output, files.MODEL_FILE), [files.model_json(body)])
    yield body


@dataclass
class EmbedFigures(beam.PTransform):
    """Figure file URIs in; embeddings files, embed_model.json and dead letters written.

    Outputs a dict: "written" (rows per embeddings file), DEAD (dead letters), "in" (one
    element per input counted) and "model" (the embed_model.json content)."""

    output: str
    handler: EmbedHandler
    source: str
    guard: object = None  # run_lock.Guard, checked before each final move
    extra: dict | None = None  # more fields for embed_model.json

    def __post_init__(self):
        super().__init__()

    def expand(self, uris):
        read = (
            uris
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadFigureFile()).with_outputs(IN, MARKERS, DEAD, main="rows")
        )
        # No with_exception_handling: the handler turns a failed batch into results itself
        # (transforms.embed.handlers), and the net's extra steps cost every run.
        results = read["rows"] | "Embed" >> RunInference(KeyedModelHandler(self.handler))
        split = results | "Split" >> beam.FlatMap(_split).with_output_types(
            typing.Any
        ).with_outputs(DEAD, main="vectors")
        info = beam.pvalue.AsSingleton(
            results
            | "Shapes" >> beam.CombineGlobally(_Shapes())
            | "Describe" >> beam.Map(_describe, handler=self.handler)
        )
        written = (
            (split["vectors"], read[MARKERS] | "Due" >> beam.Map(lambda uri: (uri, None)))
            | "Together" >> beam.Flatten()
            | "ByFile" >> beam.GroupByKey()
            | "Write"
            >> beam.ParDo(
                _WriteEmbeddings(storage.join(self.output, files.EMBEDDINGS_DIR), self.guard),
                info=info,
            )
        )
        record = {
            "model": self.handler.model,
            "weights": self.handler.weights or "none",
            "input": self.source,
            "extra": self.extra,
        }
        model = (
            written
            | "AllWritten" >> beam.combiners.Count.Globally()
            | "ModelFile"
            >> beam.FlatMap(
                _write_model_file, info=info, output=self.output, record=record, guard=self.guard
            )
        )
        dead_letters = (read[DEAD], split[DEAD]) | "AllDead" >> beam.Flatten()
        return {"written": written, DEAD: dead_letters, "in": read[IN], "model": model}
