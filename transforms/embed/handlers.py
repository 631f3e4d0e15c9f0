"""The embed stage's RunInference model handler: one per worker process, errors as data.

`EmbedHandler` serves every backend (pixels, open_clip, timm) through an `Embedder`
(transforms.embed.models). RunInference loads it once per worker process (`load_model`)
and shares it across that process's threads; wrap it in `KeyedModelHandler` so each
example's key travels with its result.

An example is `(image bytes, caption)`; a result is an `Embedded`: the vectors, or the
reason the example has none. A batch never fails as a whole because of one example:
- an image that does not decode is `image_undecodable` (the others go on), one whose header
  says more than `max_pixels` is `image_too_large` (never decoded);
- a forward pass that raises is retried one example at a time, so only the example that
  makes it fail is `inference_failed`;
- a vector with a NaN or infinity (or all zeros) is `embedding_not_finite`;
- anything else that fails the batch (a bug past these nets) makes each of its examples
  `inference_failed`, so RunInference needs no exception net of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from transforms import progress, storage
from transforms.embed.models import DEFAULT_BATCH, Embedder, finite_rows, load_embedder
from transforms.images.bounds import IMAGE_TOO_LARGE, MAX_PIXELS, ImageTooLarge

IMAGE_UNDECODABLE = "image_undecodable"
INFERENCE_FAILED = "inference_failed"
NOT_FINITE = "embedding_not_finite"
NAMESPACE = "biomedica_embed"


@dataclass
class Embedded:
    """One example's result: vectors (caption only where the model has a text tower), or a
    dead-letter reason and detail."""

    image: np.ndarray | None = None
    caption: np.ndarray | None = None
    reason: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def _why(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:500]


def embed_batch(model: Embedder, batch: Sequence[tuple]) -> list[Embedded]:
    """Results for `(image bytes, caption)` examples, in order (see the module doc)."""
    results: list[Embedded | None] = [None] * len(batch)
    ready: list[int] = []
    prepared: list = []
    for i, (image, _) in enumerate(batch):
        try:
            prepared.append(model.prepare(image))
            ready.append(i)
        except ImageTooLarge as err:
            results[i] = Embedded(reason=IMAGE_TOO_LARGE, detail=str(err))
        except Exception as err:  # any decoder failure: this example only
            results[i] = Embedded(reason=IMAGE_UNDECODABLE, detail=_why(err))
    captions = [batch[i][1] or "" for i in ready]
    try:
        vectors = _forward(model, prepared, captions)
    except Exception:
        # One example may poison the pass: try each alone, so only that one is lost.
        vectors = []
        for j, i in enumerate(ready):
            try:
                vectors.append(_forward(model, prepared[j : j + 1], captions[j : j + 1]))
            except Exception as err:
                results[i] = Embedded(reason=INFERENCE_FAILED, detail=_why(err))
                vectors.append(None)
        vectors = _join(vectors)
    for j, i in enumerate(ready):
        if results[i] is not None:
            continue
        image, caption = vectors[0][j], None if vectors[1] is None else vectors[1][j]
        rows = image[None] if caption is None else np.stack([image, caption])
        if not finite_rows(rows).all():
            which = "image" if not finite_rows(image[None])[0] else "caption"
            results[i] = Embedded(
                reason=NOT_FINITE, detail=f"the {which} embedding holds NaN, infinity or zeros"
            )
        else:
            results[i] = Embedded(image=image, caption=caption)
    progress.tick("figures", len(batch))
    return results


def _forward(model: Embedder, prepared: list, captions: list[str]):
    images = model.forward_images(prepared)
    texts = model.forward_texts(captions) if model.has_text and prepared else None
    return images, texts


def _join(parts: list) -> tuple:
    """Per-example (images, texts) pairs (None where the example failed) as two arrays with
    NaN rows for the failed ones (never read: their result is already set)."""
    width = next((p[0].shape[1] for p in parts if p is not None), 0)
    has_text = any(p is not None and p[1] is not None for p in parts)
    blank = np.full((1, width), np.nan, np.float32)
    images = [p[0] if p is not None else blank for p in parts]
    texts = [p[1] if p is not None else blank for p in parts] if has_text else None

    def stack(vectors):
        return np.concatenate(vectors) if vectors else np.zeros((0, width), np.float32)

    return stack(images), None if texts is None else stack(texts)


class EmbedHandler(ModelHandler):
    """RunInference's handler for `--model`/`--weights` (every backend).

    `loader` (tests) replaces `load_embedder`, with the same arguments (max_pixels by
    keyword)."""

    def __init__(
        self,
        model: str,
        weights: str | None,
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH,
        s3: storage.S3Config = storage.S3Config(),
        loader=None,
        max_pixels: int = MAX_PIXELS,
    ):
        super().__init__()
        self.model, self.weights, self.device = model, weights, device
        self.batch_size, self.s3 = max(1, int(batch_size)), s3
        self.loader, self.max_pixels = loader, max_pixels

    def load_model(self) -> Embedder:
        # Heavy: runs on the worker, once per process (RunInference's shared model).
        load = self.loader or load_embedder
        return load(
            self.model,
            self.weights,
            self.device,
            self.batch_size,
            self.s3,
            max_pixels=self.max_pixels,
        )

    def run_inference(
        self, batch: Sequence[tuple], model: Embedder, inference_args: dict | None = None
    ) -> Iterable[Embedded]:
        try:
            return embed_batch(model, batch)
        except Exception as err:  # a whole batch lost: each example says why, the run goes on
            return [Embedded(reason=INFERENCE_FAILED, detail=_why(err)) for _ in batch]

    def batch_elements_kwargs(self):
        # Full batches (a short one only at a bundle's end): each pass runs on batch_size
        # rows anyway (see transforms.embed.models on determinism).
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def get_num_bytes(self, batch: Sequence[tuple]) -> int:
        return sum(len(image or b"") + len(caption or "") for image, caption in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE
