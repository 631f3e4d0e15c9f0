"""Embedding models: what `--model` and `--weights` name, and loading them.

    --model pixels                      weight-free descriptor (transforms.embed.pixels)
    --model open_clip:<arch>            an OpenCLIP architecture (image and caption towers)
    --model timm:<name>                 a timm image model (pooled features, no head)

    --weights <path> | gs://.. | s3://..   a checkpoint (state dict; .safetensors too)
    --weights hf-hub:<org/name>           a Hugging Face Hub repository (its cache works offline)
    --weights none                        random initialisation: marked random_weights

`load_embedder(model, weights, device)` returns an `Embedder`: `embed_images(list[bytes])`
and, for models with a text tower, `embed_texts(list[str])`, both L2-normalised float32.

Determinism: on CPU, torch's matrix kernels give a row results that depend (in the last
bits) on how many rows the call holds, not on what the other rows are. So every forward
pass runs on exactly `batch_size` rows (a short batch is padded with blank rows): an
image's embedding is then the same whichever images share its batch, and the embed
stage's files are byte-identical however the runner cuts its bundles (same hardware,
torch build and thread count). Random weights (`--weights none`) are drawn from a fixed
seed (RANDOM_SEED, in a forked RNG: torch's global state is left as it was), so every
worker process, and every run, has the same model.

`weights_fingerprint(model, weights)` names the exact weights (embed_model.json records it,
annotate compares it before reusing a clustering model):

    pixels                  pixels-v1
    a checkpoint            sha256:<hex of the checkpoint file's bytes>
    hf-hub:<org/name>       hf-hub:<org/name>@<resolved commit, or unknown>
    none                    random:seed=<RANDOM_SEED>
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from transforms import storage
from transforms.embed import pixels
from transforms.images.bounds import MAX_PIXELS

log = logging.getLogger(__name__)

BACKENDS = ("pixels", "open_clip", "timm")
MODEL_FORMS = (
    "pixels, open_clip:<arch> (e.g. open_clip:ViT-B-32) or timm:<name> (e.g. timm:resnet50)"
)
WEIGHT_FORMS = "a checkpoint path or gs:// / s3:// URI, hf-hub:<org/name>, or none (random weights)"
DEFAULT_BATCH = 32
RANDOM_SEED = 0  # --weights none: every process draws the same random weights
HUB_LOOKUP_TIMEOUT = 10.0  # seconds for asking the hub which commit a repository is at


@dataclass(frozen=True)
class ModelSpec:
    backend: str  # one of BACKENDS
    name: str  # architecture or model name ("" for pixels)
    given: str  # --model as given

    @property
    def model_id(self) -> str:
        return pixels.MODEL_ID if self.backend == "pixels" else f"{self.backend}:{self.name}"

    @property
    def has_text(self) -> bool:
        return self.backend == "open_clip"


def parse_model(model: str) -> ModelSpec:
    """`pixels`, `open_clip:<arch>`, `timm:<name>`; ValueError naming the valid forms."""
    text = (model or "").strip()
    if text == "pixels":
        return ModelSpec("pixels", "", text)
    backend, colon, name = text.partition(":")
    if backend in ("open_clip", "timm") and colon and name.strip():
        return ModelSpec(backend, name.strip(), text)
    raise ValueError(f"--model {model!r} is not a model: use {MODEL_FORMS}")


@dataclass(frozen=True)
class WeightsSpec:
    kind: str  # none | path | uri | hf-hub
    value: str  # the path, URI or hub repository ("" for none)
    given: str  # --weights as given ("none" when not given, for pixels)

    @property
    def random(self) -> bool:
        return self.kind == "none"


def parse_weights(spec: ModelSpec, weights: str | None) -> WeightsSpec:
    """What --weights names, for the model. pixels has none; open_clip and timm need one
    (`none` for random initialisation, said out loud rather than by omission)."""
    text = (weights or "").strip()
    if spec.backend == "pixels":
        if text and text.lower() != "none":
            raise ValueError("--model pixels takes no --weights (it has none)")
        return WeightsSpec("none", "", "none")
    if not text:
        raise ValueError(f"--model {spec.given} needs --weights: {WEIGHT_FORMS}")
    if text.lower() == "none":
        return WeightsSpec("none", "", "none")
    if text.startswith("hf-hub:"):
        repo = text[len("hf-hub:") :].strip()
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ValueError(f"--weights {text}: the form is hf-hub:<org/name>")
        return WeightsSpec("hf-hub", repo, text)
    if "://" in text:
        if not text.startswith(("gs://", "s3://")):
            raise ValueError(f"--weights {text}: use {WEIGHT_FORMS}")
        return WeightsSpec("uri", text, text)
    return WeightsSpec("path", text, text)


def check_weights(weights: WeightsSpec, s3: storage.S3Config = storage.S3Config()) -> None:
    """Before a job: a checkpoint that is not there is an error now, not on every worker."""
    if weights.kind == "path" and not os.path.isfile(weights.value):
        raise ValueError(f"--weights {weights.value}: no such file")
    if weights.kind == "uri" and not storage.exists(weights.value, s3):
        raise ValueError(f"--weights {weights.value}: no such object (or it cannot be read)")


def check_architecture(spec: ModelSpec, weights: WeightsSpec) -> None:
    """Before a job: an architecture the library does not have (a hub repository names
    its own, read when the model loads)."""
    if spec.backend == "pixels" or weights.kind == "hf-hub":
        return
    from transforms.embed.torch_shim import ensure_torchvision

    ensure_torchvision()
    if spec.backend == "open_clip":
        import open_clip

        known = open_clip.list_models()
    else:
        import timm

        known = timm.list_models()
    if spec.name not in known:
        import difflib

        close = difflib.get_close_matches(spec.name, known, n=1)
        hint = f"; did you mean {spec.backend}:{close[0]}?" if close else ""
        raise ValueError(f"--model {spec.given}: {spec.backend} has no model {spec.name!r}{hint}")


def weights_fingerprint(model: str, weights: str | None, s3=storage.S3Config()) -> str:
    """What exactly --weights names, as one string (see the module doc). A checkpoint is
    read once, whole, to hash it (the launcher does this before the job)."""
    spec = parse_model(model)
    wspec = parse_weights(spec, weights)
    if spec.backend == "pixels":
        return pixels.MODEL_ID
    if wspec.random:
        return f"random:seed={RANDOM_SEED}"
    if wspec.kind == "hf-hub":
        return f"hf-hub:{wspec.value}@{hub_commit(wspec.value)}"
    digest = hashlib.sha256()
    if wspec.kind == "path":
        with open(wspec.value, "rb") as source:
            while chunk := source.read(1 << 24):
                digest.update(chunk)
    else:
        with storage.open_stream(wspec.value, s3) as source:
            while chunk := source.read(1 << 24):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def hub_commit(repo: str) -> str:
    """The commit a hub repository's main branch is at: the hub's answer (unless
    HF_HUB_OFFLINE), else the local cache's refs/main (what an offline load reads), else
    "unknown"."""
    try:
        from huggingface_hub import HfApi, constants
    except ImportError:
        return "unknown"
    if not constants.HF_HUB_OFFLINE:
        try:
            sha = HfApi().model_info(repo, timeout=HUB_LOOKUP_TIMEOUT).sha
            if sha:
                return sha
        except Exception as err:  # no network, no such repository: the cache may know
            log.info("hf-hub:%s: the hub did not say its commit (%s)", repo, err)
    folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
    try:
        with open(os.path.join(folder, "refs", "main")) as ref:
            return ref.read().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def _seeded(random: bool, device: str):
    """Random initialisation from RANDOM_SEED in a forked RNG (torch's global state, and
    the caller's draws, stay as they were); nothing for loaded weights."""
    if not random:
        yield
        return
    import torch

    devices = list(range(torch.cuda.device_count())) if device == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(RANDOM_SEED)
        yield


def resolve_device(device: str) -> str:
    """auto: a GPU where torch sees one, else the CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {device!r}: use auto, cpu or cuda")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise RuntimeError("--device cuda, but torch sees no GPU here")
    return "cpu"


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a row that is not finite, or zero, stays as it
    is (the caller checks `finite_rows`)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.sum(vectors.astype(np.float64) ** 2, axis=1))
    good = np.isfinite(norms) & (norms > 0)
    out = vectors.copy()
    out[good] = (vectors[good] / norms[good, None]).astype(np.float32)
    return out


def finite_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows that are usable embeddings: every value finite, unit length."""
    finite = np.all(np.isfinite(vectors), axis=1)
    norms = np.sqrt(np.sum(np.where(np.isfinite(vectors), vectors, 0).astype(np.float64) ** 2, 1))
    return finite & (np.abs(norms - 1.0) < 1e-3)


@dataclass
class Embedder:
    """A loaded model. Subclasses define `prepare` (bytes -> model input; raises on an
    image that does not decode) and `_forward_images` (prepared inputs -> raw vectors)."""

    model_id: str
    dim: int
    has_text: bool
    random_weights: bool
    batch_size: int = DEFAULT_BATCH
    device: str = "cpu"
    spec: ModelSpec | None = None
    weights: WeightsSpec | None = None
    info: dict = field(default_factory=dict)
    max_pixels: int = MAX_PIXELS  # larger images are refused from their header, undecoded

    def prepare(self, data: bytes):
        raise NotImplementedError

    def forward_images(self, prepared: list) -> np.ndarray:
        """(n, dim) float32 unit rows of prepared inputs, in `batch_size` passes."""
        if not prepared:
            return np.zeros((0, self.dim), np.float32)
        parts = [
            self._forward_images(prepared[start : start + self.batch_size])
            for start in range(0, len(prepared), self.batch_size)
        ]
        return _unit_rows(np.concatenate(parts))

    def _forward_images(self, prepared: list) -> np.ndarray:
        raise NotImplementedError

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        """(n, dim) float32, L2-normalised. ValueError naming the first image that does not
        decode (or is larger than max_pixels)."""
        prepared = []
        for i, data in enumerate(images):
            try:
                prepared.append(self.prepare(data))
            except Exception as err:
                raise ValueError(f"image {i} does not decode: {type(err).__name__}: {err}") from err
        return self.forward_images(prepared)

    def forward_texts(self, texts: list[str]) -> np.ndarray:
        if not self.has_text:
            raise TypeError(f"{self.model_id} has no text tower")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        parts = [
            self._forward_texts(list(texts[start : start + self.batch_size]))
            for start in range(0, len(texts), self.batch_size)
        ]
        return _unit_rows(np.concatenate(parts))

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised (models with a text tower only)."""
        return self.forward_texts([t or "" for t in texts])

    def describe(self) -> dict:
        return {
            "model_id": self.model_id,
            "dim": self.dim,
            "caption": self.has_text,
            "random_weights": self.random_weights,
            "device": self.device,
            **self.info,
        }


class PixelsEmbedder(Embedder):
    """pixels-v1: one image at a time, nothing to batch (and nothing batch-dependent)."""

    def prepare(self, data: bytes):
        return pixels.describe(data, self.max_pixels)

    def _forward_images(self, prepared: list) -> np.ndarray:
        return np.stack(prepared)


class TorchEmbedder(Embedder):
    """A torch image model with its own eval transform (and an optional text tower)."""

    module = None  # the torch module, eval mode, on `device`
    transform = None  # PIL image -> tensor, the model's own eval preprocessing
    tokenizer = None  # open_clip only
    input_side: int = 224
    dtype = None

    def prepare(self, data: bytes):
        # Decode no smaller than twice the model's input (JPEG draft mode): the model's own
        # resize then still starts from a larger image, at a fraction of a full decode.
        side = 2 * self.input_side
        image = pixels.decode(data, draft=(side, side), max_pixels=self.max_pixels)
        return self.transform(image)

    def _padded(self, tensors: list):
        import torch

        batch = torch.stack(tensors)
        missing = self.batch_size - batch.shape[0]
        if missing > 0:  # fixed-size passes: see the module doc
            blank = torch.zeros((missing, *batch.shape[1:]), dtype=batch.dtype)
            batch = torch.cat([batch, blank])
        return batch, len(tensors)

    def _run(self, fn, batch, rows: int) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = fn(
                batch.to(self.device, dtype=self.dtype)
                if batch.is_floating_point()
                else batch.to(self.device)
            )
        return out[:rows].float().cpu().numpy()

    def _forward_images(self, prepared: list) -> np.ndarray:
        batch, rows = self._padded(prepared)
        encode = getattr(self.module, "encode_image", self.module)
        return self._run(encode, batch, rows)

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts + [""] * max(0, self.batch_size - len(texts)))
        return self._run(self.module.encode_text, tokens, len(texts))


def _local_checkpoint(weights: WeightsSpec, s3: storage.S3Config, folder: str) -> str:
    """A local file holding the checkpoint: the path itself, or a copy of the object."""
    if weights.kind == "path":
        if not os.path.isfile(weights.value):
            raise FileNotFoundError(f"--weights {weights.value}: no such file")
        return weights.value
    suffix = os.path.splitext(weights.value.rsplit("/", 1)[-1])[1] or ".pt"
    local = os.path.join(folder, f"checkpoint{suffix}")  # the suffix tells safetensors apart
    with storage.open_stream(weights.value, s3) as source, open(local, "wb") as sink:
        while chunk := source.read(1 << 24):
            sink.write(chunk)
    return local


def _load_open_clip(spec, weights, device, checkpoint) -> tuple:
    from transforms.embed.torch_shim import ensure_torchvision

    ensure_torchvision()
    import open_clip

    precision = "fp16" if device == "cuda" else "fp32"
    kwargs = {"precision": precision, "device": device}
    if weights.kind == "hf-hub":
        name = f"hf-hub:{weights.value}"
        # Without this, open_clip goes on with random weights when the hub has none.
        kwargs["require_pretrained"] = True
    elif weights.random:
        name = spec.name
        kwargs["pretrained_text"] = False  # no download of a text tower's base weights
    else:
        name = spec.name
        kwargs["pretrained"] = checkpoint
        kwargs["require_pretrained"] = True
    if weights.kind != "hf-hub" and spec.name not in open_clip.list_models():
        raise ValueError(f"open_clip has no architecture {spec.name!r} (open_clip.list_models())")
    model, _, transform = open_clip.create_model_and_transforms(name, **kwargs)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    side = model.visual.image_size
    side = side[0] if isinstance(side, (tuple, list)) else side
    return model, transform, tokenizer, int(side), _output_dim(model.encode_image, side, device)


def _output_dim(encode, side: int, device: str) -> int:
    """The embedding size, from one blank image (the towers do not all say it alike)."""
    import torch

    blank = torch.zeros((1, 3, side, side), device=device)
    with torch.inference_mode():
        return int(encode(blank.half() if device == "cuda" else blank).shape[-1])


def _load_timm(spec, weights, device, checkpoint) -> tuple:
    from transforms.embed.torch_shim import ensure_torchvision

    ensure_torchvision()
    import timm
    from timm.data import create_transform, resolve_data_config

    if weights.kind == "hf-hub":
        model = timm.create_model(f"hf-hub:{weights.value}", pretrained=True)
    else:
        if spec.name not in timm.list_models():
            raise ValueError(f"timm has no model {spec.name!r} (timm.list_models())")
        model = timm.create_model(spec.name, pretrained=False)
        if checkpoint:
            _load_timm_checkpoint(model, checkpoint)
    model.reset_classifier(0)  # pooled features: the embedding
    model.eval()
    if device == "cuda":
        model = model.half()
    model.to(device)
    config = resolve_data_config({}, model=model)
    transform = create_transform(**config, is_training=False)
    side = max(config["input_size"][1:])
    return model, transform, None, int(side), int(model.num_features)


def _load_timm_checkpoint(model, path: str) -> None:
    """A state dict with or without the classifier (a feature extractor's has none): every
    other weight must be there (strict), the classifier is dropped either way."""
    from timm.models import load_state_dict

    state = load_state_dict(path)
    head = model.pretrained_cfg.get("classifier") or ""
    heads = head if isinstance(head, (list, tuple)) else [head]
    state = {k: v for k, v in state.items() if not any(k.startswith(f"{h}.") for h in heads if h)}
    model.reset_classifier(0)
    model.load_state_dict(state, strict=True)


def load_embedder(
    model: str,
    weights: str | None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH,
    s3: storage.S3Config = storage.S3Config(),
    max_pixels: int = MAX_PIXELS,
) -> Embedder:
    """The model `--model`/`--weights` name, ready to embed (see the module doc); images of
    more than `max_pixels` are refused undecoded (ImageTooLarge, a ValueError).

    ValueError for a model or weights that are not valid forms; FileNotFoundError or
    storage errors for a checkpoint that cannot be read; RuntimeError from the libraries for
    one that does not fit the architecture."""
    spec = parse_model(model)
    wspec = parse_weights(spec, weights)
    batch_size = max(1, int(batch_size))
    if spec.backend == "pixels":
        embedder = PixelsEmbedder(
            pixels.MODEL_ID, pixels.DIM, False, False, batch_size, "cpu", spec, wspec
        )
        embedder.max_pixels = max_pixels
        return embedder
    where = resolve_device(device)
    if wspec.random:
        log.warning(
            "%s has random weights (--weights none): its embeddings say nothing about the "
            "images; use it for tests only",
            spec.given,
        )
    import torch

    with tempfile.TemporaryDirectory(prefix="biomedica-weights-") as folder:
        checkpoint = None
        if wspec.kind in ("path", "uri"):
            checkpoint = _local_checkpoint(wspec, s3, folder)
        loader = _load_open_clip if spec.backend == "open_clip" else _load_timm
        with _seeded(wspec.random, where):
            module, transform, tokenizer, side, dim = loader(spec, wspec, where, checkpoint)
    embedder = TorchEmbedder(
        spec.model_id, dim, spec.has_text, wspec.random, batch_size, where, spec, wspec
    )
    embedder.max_pixels = max_pixels
    embedder.module, embedder.transform, embedder.tokenizer = module, transform, tokenizer
    embedder.input_side = side
    embedder.dtype = torch.float16 if where == "cuda" else torch.float32
    embedder.info = {"torch_threads": torch.get_num_threads(), "input_side": side}
    return embedder
