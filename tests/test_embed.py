"""The embed stage: torchvision shim, pixels-v1, model loading (random, checkpoint, gs://,
hf-hub offline), the RunInference handler's errors as data, and the pipeline end to end."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PMC, REPO, gcs_emulator, read_dead_letters, run_extract
from PIL import Image

from transforms.embed import models, pixels
from transforms.pmc import sample_corpus as sc

PYTHON = sys.executable


def _child(code: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    """Python in a fresh process (torchvision's import state is per process)."""
    return subprocess.run(
        [PYTHON, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _jpeg(image: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


# ---- the torchvision shim ------------------------------------------------------------------


def test_torchvision_imports_after_the_shim_and_missing_ops_fail_cleanly():
    done = _child(
        """
        import json
        from transforms.embed.torch_shim import ensure_torchvision, shimmed
        first, second = ensure_torchvision(), ensure_torchvision()
        import torch, torchvision, torchvision.transforms as T, open_clip, timm
        from PIL import Image
        from timm.data import create_transform, resolve_data_config
        image = Image.new("RGB", (64, 48), (10, 200, 30))
        clip_shape = list(open_clip.image_transform(32, is_train=False)(image).shape)
        model = timm.create_model("test_vit", pretrained=False)
        timm_shape = list(create_transform(**resolve_data_config({}, model=model))(image).shape)
        errors = []
        for call in (
            lambda: torchvision.ops.nms(torch.zeros(2, 4), torch.zeros(2), 0.5),
            lambda: torch.ops.torchvision.nms(torch.zeros(2, 4), torch.zeros(2), 0.5),
        ):
            try:
                call()
                errors.append(None)
            except Exception as err:
                errors.append(type(err).__name__)
        print(json.dumps({"first": first, "second": second, "shimmed": shimmed(),
                          "clip": clip_shape, "timm": timm_shape, "errors": errors,
                          "resize": list(T.Resize(8)(image).size)}))
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    # This machine's torchvision wheel lacks its CPU kernels: the shim was needed.
    assert got["first"] is True and got["second"] is True and got["shimmed"] is True
    assert got["clip"] == [3, 32, 32] and got["timm"][0] == 3
    assert got["resize"] == [10, 8]
    assert got["errors"] == ["RuntimeError", "NotImplementedError"]


def test_without_the_shim_torchvision_does_not_import():
    # What the shim is for: if this starts passing, torchvision's wheel matches torch and
    # ensure_torchvision() has become a no-op (it checks the extension first).
    done = _child("import torchvision")
    assert done.returncode != 0 and "torchvision::nms" in done.stderr


# ---- pixels-v1 -----------------------------------------------------------------------------


def _kind_corpus(per_kind: int, seed: int) -> list[tuple[str, bytes]]:
    """(kind, JPEG) pairs: per_kind images of each kind the sample generator draws."""
    images = []
    for k, kind in enumerate(sc.KINDS):
        for i in range(per_kind):
            rng = np.random.default_rng([seed, k, i])
            w = int(rng.integers(300, 640))
            h = max(64, int(w * (0.6 + 0.5 * rng.random())))
            images.append((kind, _jpeg(sc.paint(kind, rng, w, h))))
    return images


def test_pixels_is_deterministic_unit_norm_and_batch_independent():
    images = [data for _, data in _kind_corpus(2, seed=7)]
    embedder = models.load_embedder("pixels", None, batch_size=4)
    assert (embedder.model_id, embedder.dim, embedder.has_text) == ("pixels-v1", pixels.DIM, False)
    assert embedder.random_weights is False
    together = embedder.embed_images(images)
    alone = np.concatenate([embedder.embed_images([data]) for data in images])
    assert together.dtype == np.float32 and together.shape == (len(images), pixels.DIM)
    assert together.tobytes() == alone.tobytes()
    assert together.tobytes() == embedder.embed_images(images).tobytes()
    assert np.allclose(np.linalg.norm(together, axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="image 1 does not decode"):
        embedder.embed_images([images[0], b"not an image"])


def test_pixels_separates_figure_kinds():
    from sklearn.cluster import KMeans

    images = _kind_corpus(24, seed=3)
    vectors = np.stack([pixels.describe(data) for _, data in images])
    kinds = list(sc.KINDS)
    truth = np.array([kinds.index(kind) for kind, _ in images])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -2)
    nearest = truth[similarity.argmax(axis=1)]
    assert (nearest == truth).mean() >= 0.95
    clusters = KMeans(len(kinds), n_init=10, random_state=0).fit(vectors).labels_
    purity = sum(np.bincount(truth[clusters == c]).max() for c in set(clusters)) / len(truth)
    assert purity >= 0.9, purity


def test_pixels_reads_real_pmc_figures(pmc_dir):
    found = sorted(
        p for p in (pmc_dir / "packages").rglob("*") if p.suffix.lower() in (".jpg", ".png")
    )
    assert len(found) >= 10
    vectors = np.stack([pixels.describe(p.read_bytes()) for p in found])
    assert np.all(np.isfinite(vectors))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # Different figures, different vectors (a few files are copies of one image).
    assert len({v.tobytes() for v in vectors}) > len(found) // 2


# ---- model specs and loading ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "weights", "message"),
    [
        ("clip", None, "is not a model: use pixels, open_clip:<arch>"),
        ("open_clip:", "none", "is not a model"),
        ("open_clip:ViT-S-32", None, "needs --weights: a checkpoint path"),
        ("timm:resnet18", "", "needs --weights"),
        ("pixels", "hf-hub:a/b", "takes no --weights"),
        ("timm:resnet18", "hf-hub:nothing", "hf-hub:<org/name>"),
        ("timm:resnet18", "http://x/y.pt", "use a checkpoint path"),
    ],
)
def test_model_and_weights_forms(model, weights, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec = models.parse_model(model)
        models.parse_weights(spec, weights)


@pytest.fixture(scope="module")
def clip_random():
    return models.load_embedder("open_clip:ViT-S-32", "none", "cpu", batch_size=2)


@pytest.fixture(scope="module")
def few_images() -> list[bytes]:
    return [data for _, data in _kind_corpus(1, seed=11)][:3]


def test_open_clip_random_weights_are_flagged_and_embed_images_and_captions(
    clip_random, few_images, caplog
):
    assert clip_random.model_id == "open_clip:ViT-S-32"
    assert clip_random.has_text and clip_random.random_weights and clip_random.dim == 384
    images = clip_random.embed_images(few_images)
    texts = clip_random.embed_texts(["Western blot of p53", "", "Bar chart of survival"])
    assert images.shape == (3, 384) and texts.shape == (3, 384)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    # Fixed-size passes: an image's vector does not depend on its batch.
    assert images[2:3].tobytes() == clip_random.embed_images(few_images[2:3]).tobytes()


def test_timm_random_weights_flagged_and_pooled_features():
    embedder = models.load_embedder("timm:test_vit", "none", "cpu", batch_size=4)
    assert embedder.model_id == "timm:test_vit" and not embedder.has_text
    assert embedder.random_weights
    vectors = embedder.embed_images([_jpeg(Image.new("RGB", (90, 70), (0, 90, 200)))])
    assert vectors.shape == (1, embedder.dim)
    with pytest.raises(TypeError, match="no text tower"):
        embedder.embed_texts(["x"])


def test_unknown_architectures_are_refused_before_a_job():
    spec = models.parse_model("open_clip:ViT-S-99")
    with pytest.raises(ValueError, match="open_clip has no model 'ViT-S-99'"):
        models.check_architecture(spec, models.parse_weights(spec, "none"))
    spec = models.parse_model("timm:resnet1888")
    with pytest.raises(ValueError, match="did you mean timm:resnet18"):
        models.check_architecture(spec, models.parse_weights(spec, "none"))


def test_local_checkpoints_load_the_saved_weights(tmp_path, clip_random, few_images):
    import torch

    clip_path = tmp_path / "clip.pt"
    torch.save(clip_random.module.state_dict(), clip_path)
    loaded = models.load_embedder("open_clip:ViT-S-32", str(clip_path), "cpu", batch_size=2)
    assert loaded.random_weights is False
    assert np.array_equal(loaded.embed_images(few_images), clip_random.embed_images(few_images))
    assert np.array_equal(loaded.embed_texts(["a gel"]), clip_random.embed_texts(["a gel"]))

    vit = models.load_embedder("timm:test_vit", "none", "cpu", batch_size=4)
    state = {k: v for k, v in vit.module.state_dict().items()}
    vit_path = tmp_path / "vit.pt"
    torch.save(state, vit_path)
    again = models.load_embedder("timm:test_vit", str(vit_path), "cpu", batch_size=4)
    assert np.array_equal(again.embed_images(few_images), vit.embed_images(few_images))


def test_a_gs_checkpoint_is_copied_and_loaded(tmp_path, few_images, no_credential_retries):
    import torch

    vit = models.load_embedder("timm:test_vit", "none", "cpu", batch_size=4)
    buffer = io.BytesIO()
    torch.save(vit.module.state_dict(), buffer)
    with gcs_emulator("weights") as client:
        client.bucket("weights").blob("models/vit.pt").upload_from_string(buffer.getvalue())
        spec = models.parse_model("timm:test_vit")
        models.check_weights(models.parse_weights(spec, "gs://weights/models/vit.pt"))
        with pytest.raises(ValueError, match="no such object"):
            models.check_weights(models.parse_weights(spec, "gs://weights/models/absent.pt"))
        loaded = models.load_embedder("timm:test_vit", "gs://weights/models/vit.pt", "cpu", 4)
        fingerprint = models.weights_fingerprint("timm:test_vit", "gs://weights/models/vit.pt")
    assert fingerprint == "sha256:" + hashlib.sha256(buffer.getvalue()).hexdigest()
    assert not loaded.random_weights
    assert np.array_equal(loaded.embed_images(few_images), vit.embed_images(few_images))


def test_hf_hub_weights_from_an_offline_cache(tmp_path):
    # The hub code path itself (huggingface_hub's hf_hub_download in open_clip and timm),
    # reading a cache this test fills; HF_HUB_OFFLINE=1, so nothing is fetched. A child
    # process, because huggingface_hub reads these variables when it is imported.
    cache = tmp_path / "hub"
    done = _child(
        f"""
        import io, json, os
        import numpy as np
        from transforms.embed.torch_shim import ensure_torchvision
        ensure_torchvision()
        import torch, timm
        from open_clip.model import CLIP
        from PIL import Image
        from safetensors.torch import save_file
        from transforms.embed import models

        cache = {str(cache)!r}

        def put(repo, files):
            folder = os.path.join(cache, "models--" + repo.replace("/", "--"))
            snapshot = os.path.join(folder, "snapshots", "0" * 40)
            os.makedirs(snapshot)
            os.makedirs(os.path.join(folder, "refs"))
            open(os.path.join(folder, "refs", "main"), "w").write("0" * 40)
            for name, write in files.items():
                write(os.path.join(snapshot, name))

        torch.manual_seed(0)
        tiny = {{"embed_dim": 32,
                 "vision_cfg": {{"image_size": 64, "layers": 2, "width": 64, "patch_size": 16,
                                 "head_width": 32}},
                 "text_cfg": {{"context_length": 32, "vocab_size": 49408, "width": 64,
                               "heads": 2, "layers": 2}}}}
        clip = CLIP(**tiny).eval()
        put("lab/clip-tiny", {{
            "open_clip_config.json": lambda p: open(p, "w").write(
                json.dumps({{"model_cfg": tiny, "preprocess_cfg": {{}}}})),
            "open_clip_model.safetensors": lambda p: save_file(clip.state_dict(), p),
        }})
        vit = timm.create_model("test_vit", pretrained=False).eval()
        staged = os.path.join(cache, "staged")
        timm.models.save_for_hf(vit, staged, safe_serialization=True)
        put("lab/vit-test", {{
            name: (lambda p, n=name: os.replace(os.path.join(staged, n), p))
            for name in ("config.json", "model.safetensors")
        }})
        image = io.BytesIO()
        Image.new("RGB", (120, 90), (200, 30, 30)).save(image, "JPEG")
        image = image.getvalue()

        hub_clip = models.load_embedder("open_clip:tiny", "hf-hub:lab/clip-tiny", "cpu", 1)
        with torch.inference_mode():
            want = clip.encode_image(torch.stack([hub_clip.prepare(image)]))
        want = torch.nn.functional.normalize(want, dim=-1).numpy()
        hub_vit = models.load_embedder("timm:test_vit", "hf-hub:lab/vit-test", "cpu", 1)
        vit.reset_classifier(0)
        with torch.inference_mode():
            own = vit(torch.stack([hub_vit.prepare(image)]))
        own = torch.nn.functional.normalize(own, dim=-1).numpy()
        try:
            models.load_embedder("timm:test_vit", "hf-hub:lab/absent", "cpu", 1)
            absent = "loaded"
        except Exception as err:
            absent = type(err).__name__
        print(json.dumps({{
            "clip": float(np.abs(hub_clip.embed_images([image]) - want).max()),
            "clip_random": hub_clip.random_weights, "clip_dim": hub_clip.dim,
            "clip_text": list(hub_clip.embed_texts(["x"]).shape),
            "vit": float(np.abs(hub_vit.embed_images([image]) - own).max()),
            "absent": absent,
        }}))
        """,
        env={
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "home"),
            "HF_HUB_CACHE": str(cache),
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["clip"] < 1e-6 and got["vit"] < 1e-6
    assert got["clip_random"] is False and got["clip_dim"] == 32 and got["clip_text"] == [1, 32]
    assert got["absent"] != "loaded"


def test_random_weights_are_one_model_in_every_process_and_leave_torch_rng_alone(
    tmp_path, clip_random, few_images
):
    import torch

    paths = []
    for i, data in enumerate(few_images):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Path(paths[-1]).write_bytes(data)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    vit = models.load_embedder("timm:test_vit", "none", "cpu", batch_size=2)
    again = models.load_embedder("timm:test_vit", "none", "cpu", batch_size=2)
    assert torch.equal(torch.rand(3), expected_next)  # loading drew nothing from it
    here = {
        "open_clip:ViT-S-32": clip_random.embed_images(few_images).tobytes()
        + clip_random.embed_texts(["a western blot"]).tobytes(),
        "timm:test_vit": vit.embed_images(few_images).tobytes(),
    }
    assert again.embed_images(few_images).tobytes() == here["timm:test_vit"]
    done = _child(
        f"""
        import hashlib, json
        from transforms.embed import models
        images = [open(p, "rb").read() for p in {paths!r}]
        clip = models.load_embedder("open_clip:ViT-S-32", "none", "cpu", batch_size=2)
        vit = models.load_embedder("timm:test_vit", "none", "cpu", batch_size=2)
        print(json.dumps({{
            "open_clip:ViT-S-32": hashlib.sha256(clip.embed_images(images).tobytes()
                + clip.embed_texts(["a western blot"]).tobytes()).hexdigest(),
            "timm:test_vit": hashlib.sha256(vit.embed_images(images).tobytes()).hexdigest(),
        }}))
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there == {model: hashlib.sha256(data).hexdigest() for model, data in here.items()}


def test_weights_fingerprint_names_the_exact_weights(tmp_path, monkeypatch):
    from huggingface_hub import constants

    assert models.weights_fingerprint("pixels", None) == "pixels-v1"
    assert models.weights_fingerprint("timm:test_vit", "none") == "random:seed=0"
    assert models.weights_fingerprint("open_clip:ViT-S-32", "None") == "random:seed=0"
    checkpoint = tmp_path / "w.pt"
    checkpoint.write_bytes(b"weights v1" * 1000)
    first = models.weights_fingerprint("timm:test_vit", str(checkpoint))
    assert first == "sha256:" + hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    checkpoint.write_bytes(b"weights v2" * 1000)
    assert models.weights_fingerprint("timm:test_vit", str(checkpoint)) != first
    # The hub: offline, the cache's refs/main says which commit a load reads.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    refs = tmp_path / "hub" / "models--lab--vit-test" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("ab" * 20)
    assert models.weights_fingerprint("timm:x", "hf-hub:lab/vit-test") == (
        "hf-hub:lab/vit-test@" + "ab" * 20
    )
    assert models.weights_fingerprint("timm:x", "hf-hub:lab/absent") == "hf-hub:lab/absent@unknown"


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height (CRC fixed): nothing more to decode."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1), (9, 9, 9)).save(out, "PNG")
    data = bytearray(out.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's data starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(_jpeg(Image.new("RGB", (16, 16), (9, 9, 9))))
    at = data.index(b"\xff\xc0")  # baseline SOF: length, precision, height, width
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_images_too_large_are_refused_from_the_header(clip_random):
    from transforms.annotate.thumbnails import make_thumbnail
    from transforms.embed.handlers import embed_batch
    from transforms.images.bounds import ImageTooLarge

    huge = [_png_claiming(12000, 12000), _jpeg_claiming(12000, 12000)]
    assert [Image.open(io.BytesIO(d)).size for d in huge] == [(12000, 12000)] * 2
    started = time.perf_counter()
    for data in huge:
        for refuse in (pixels.describe, clip_random.prepare, make_thumbnail):
            with pytest.raises(ValueError, match=r"12000x12000 > 89478485 pixels") as caught:
                refuse(data)
            assert isinstance(caught.value, ImageTooLarge)
            assert caught.value.reason == "image_too_large"
    assert time.perf_counter() - started < 1.0  # refused unread (a decode takes seconds)
    small = _jpeg(Image.new("RGB", (300, 200), (0, 90, 200)))
    assert Image.open(io.BytesIO(make_thumbnail(small))).size == (160, 107)
    with pytest.raises(ImageTooLarge, match="300x200 > 50000 pixels"):
        make_thumbnail(small, max_pixels=50_000)
    embedder = models.load_embedder("pixels", None, max_pixels=50_000)
    results = embed_batch(
        embedder, [(small, ""), (huge[0], ""), (_jpeg(Image.new("RGB", (90, 90))), "")]
    )
    assert [r.reason for r in results] == ["image_too_large", "image_too_large", ""]
    assert results[0].detail == "300x200 > 50000 pixels"


# ---- the handler: errors as data -----------------------------------------------------------


class _Exploding(models.PixelsEmbedder):
    """pixels, but a pass that holds the poisoned image raises, and another image's vector
    comes out NaN."""

    poison: bytes = b""
    nan: bytes = b""

    def prepare(self, data: bytes):
        vector = super().prepare(data)
        return (vector, data == self.poison, data == self.nan)

    def _forward_images(self, prepared: list) -> np.ndarray:
        if any(poisoned for _, poisoned, _ in prepared):
            raise RuntimeError("CUDA error: device-side assert triggered")
        out = np.stack([vector for vector, _, _ in prepared])
        out[[nan for _, _, nan in prepared]] = np.nan
        return out


POISON = _jpeg(Image.new("RGB", (80, 60), (255, 0, 0)))
NAN = _jpeg(Image.new("RGB", (80, 60), (0, 0, 255)))


def exploding_loader(model, weights, device, batch_size, s3, max_pixels=models.MAX_PIXELS):
    embedder = _Exploding(pixels.MODEL_ID, pixels.DIM, False, False, batch_size)
    embedder.poison, embedder.nan = POISON, NAN
    embedder.max_pixels = max_pixels
    return embedder


def test_handler_dead_letters_only_the_guilty_examples():
    from transforms.embed.handlers import EmbedHandler, embed_batch

    handler = EmbedHandler("pixels", None, batch_size=8, loader=exploding_loader)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 8, "max_batch_size": 8}
    model = handler.load_model()
    good = [_jpeg(Image.new("RGB", (80, 60), (0, g, 0))) for g in (50, 150)]
    batch = [(good[0], "a"), (POISON, "b"), (b"\xff\xd8garbage", "c"), (NAN, "d"), (good[1], None)]
    results = list(handler.run_inference(batch, model))
    assert [r.reason for r in results] == [
        "",
        "inference_failed",
        "image_undecodable",
        "embedding_not_finite",
        "",
    ]
    assert "device-side assert" in results[1].detail
    expected = models.load_embedder("pixels", None).embed_images(good)
    assert np.array_equal(np.stack([results[0].image, results[4].image]), expected)
    assert [r.reason for r in embed_batch(model, [])] == []


# ---- the pipeline ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_extract(tmp_path_factory) -> Path:
    from transforms.pmc.sample_corpus import generate_corpus

    root = tmp_path_factory.mktemp("embed_sample")
    generate_corpus(str(root / "corpus"), 8, seed=4, image_side=200)
    report = run_extract(
        [
            "--source",
            str(root / "corpus"),
            "--output",
            str(root / "extract"),
            "--log_level",
            "ERROR",
        ]
    )
    assert report["balanced"]
    return root / "extract"


def _run_embed(argv: list[str], handler=None) -> dict:
    from pipelines.embed import run

    return run([*argv, "--log_level", "ERROR"], handler=handler)


def _check_embeddings(extract: Path, out: Path, dim: int, model_id: str, caption: bool) -> int:
    figure_files = sorted((extract / "extract" / "figures").glob("*.parquet"))
    dead = {d["key"] for d in read_dead_letters(out)}
    rows = 0
    for figures in figure_files:
        table = pq.read_table(out / "embeddings" / figures.name)
        keys = pq.read_table(figures, columns=["key"]).column("key").to_pylist()
        assert table.column("key").to_pylist() == [k for k in keys if k not in dead]
        assert table.schema.field("image_embedding").type == pa.list_(pa.float32(), dim)
        assert set(table.column("model").to_pylist()) <= {model_id}
        vectors = np.asarray(table.column("image_embedding").to_pylist(), np.float32)
        assert vectors.shape == (table.num_rows, dim)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        assert ("caption_embedding" in table.column_names) == caption
        rows += table.num_rows
    assert sorted(p.name for p in (out / "embeddings").iterdir()) == [f.name for f in figure_files]
    return rows


def test_pipeline_pixels_end_to_end_and_deterministic(sample_extract, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    report = _run_embed(["--input", str(sample_extract), "--output", str(first)])
    stage = report["stages"]["embed"]
    assert report["balanced"] and stage["dead_letter"] == 0 and stage["in"] == stage["out"] > 20
    assert _check_embeddings(sample_extract, first, pixels.DIM, "pixels-v1", False) == stage["out"]
    record = json.loads((first / "embed_model.json").read_text())
    assert record == {
        "version": 1,
        "model": "pixels",
        "model_id": "pixels-v1",
        "weights": "none",
        "random_weights": False,
        "dim": pixels.DIM,
        "caption": False,
        "input": str(sample_extract),
        "weights_fingerprint": "pixels-v1",
    }
    _run_embed(
        ["--input", str(sample_extract), "--output", str(second), "--batch_size", "3"]
        + ["--direct_running_mode", "multi_threading", "--direct_num_workers", "2"]
    )
    for name in sorted(p.name for p in (first / "embeddings").iterdir()):
        assert (first / "embeddings" / name).read_bytes() == (
            second / "embeddings" / name
        ).read_bytes()
    with pytest.raises(SystemExit, match="already holds a run"):
        _run_embed(["--input", str(sample_extract), "--output", str(first)])
    again = _run_embed(["--input", str(sample_extract), "--output", str(first), "--overwrite"])
    assert again["balanced"]


def _damaged_input(sample_extract: Path, root: Path) -> tuple[Path, dict]:
    """The sample's figures cut into two files, with bad images in the second."""
    figures = sorted((sample_extract / "extract" / "figures").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in figures])
    images = table.column("image").to_pylist()
    good = images[0]
    bad = {2: b"", 3: b"\x00garbage\x00" * 10, 5: good[: len(good) // 2]}
    for i, data in bad.items():
        images[i] = data
    table = table.set_column(
        table.schema.get_field_index("image"), "image", pa.array(images, pa.binary())
    )
    folder = root / "extract" / "figures"
    folder.mkdir(parents=True)
    pq.write_table(table.slice(0, 2), folder / "part-00000-of-00002.parquet")
    pq.write_table(table.slice(2, 8), folder / "part-00001-of-00002.parquet")
    (folder / "part-00002-of-00003.parquet").write_bytes(b"PAR1 this is not parquet")
    keys = table.column("key").to_pylist()
    return root, {keys[i]: "image_undecodable" for i in bad}


def test_pipeline_bad_images_and_unreadable_files_are_dead_letters(sample_extract, tmp_path):
    source, expected = _damaged_input(sample_extract, tmp_path / "in")
    out = tmp_path / "out"
    report = _run_embed(["--input", str(source), "--output", str(out)])
    stage = report["stages"]["embed"]
    assert report["balanced"]
    assert stage["in"] == 10 + 1 and stage["out"] == 7 and stage["dead_letter"] == 4
    dead = read_dead_letters(out)
    by_key = {d["key"]: d["reason"] for d in dead}
    unreadable = str(source / "extract" / "figures" / "part-00002-of-00003.parquet")
    assert by_key == {**expected, unreadable: "unit_unreadable"}
    assert all(d["stage"] == "embed" for d in dead)
    # The unreadable file has no embeddings file; the others have theirs, in order.
    names = sorted(p.name for p in (out / "embeddings").iterdir())
    assert names == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    kept = pq.read_table(out / "embeddings" / names[1]).column("key").to_pylist()
    keys = pq.read_table(source / "extract" / "figures" / names[1]).column("key").to_pylist()
    assert kept == [k for k in keys if k not in expected]


def _damage(path: Path, group: int, columns: list[str]) -> None:
    """Overwrite the column chunks of `columns` in row group `group` (pages unreadable)."""
    metadata = pq.ParquetFile(path).metadata.row_group(group)
    data = bytearray(path.read_bytes())
    for i in range(metadata.num_columns):
        chunk = metadata.column(i)
        if chunk.path_in_schema in columns:
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else None
            start = start or chunk.data_page_offset
            data[start : start + chunk.total_compressed_size] = (
                b"\xff" * chunk.total_compressed_size
            )
    path.write_bytes(bytes(data))


def test_pipeline_damaged_row_groups_count_every_figure_and_huge_images_are_refused(
    sample_extract, tmp_path
):
    figures = sorted((sample_extract / "extract" / "figures").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in figures]).slice(0, 13)
    images = table.column("image").to_pylist()
    images[1] = _png_claiming(12000, 12000)
    table = table.set_column(
        table.schema.get_field_index("image"), "image", pa.array(images, pa.binary())
    )
    folder = tmp_path / "in" / "extract" / "figures"
    folder.mkdir(parents=True)
    names = [f"part-0000{i}-of-00003.parquet" for i in range(3)]
    pq.write_table(table.slice(0, 3), folder / names[0])
    pq.write_table(table.slice(3, 6), folder / names[1], row_group_size=2)
    pq.write_table(table.slice(9, 4), folder / names[2], row_group_size=2)
    _damage(folder / names[1], 1, ["image"])  # its keys still read
    _damage(folder / names[2], 0, ["key", "image"])  # nothing of it reads
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in"), "--output", str(out), "--max_pixels", "100000000"]
    report = _run_embed(argv)
    stage = report["stages"]["embed"]
    assert report["balanced"] and report["parameters"]["max_pixels"] == 100_000_000
    assert (stage["in"], stage["out"], stage["dead_letter"]) == (13, 8, 5)
    keys = table.column("key").to_pylist()
    dead = {d["key"]: d for d in read_dead_letters(out)}
    damaged = str(folder / names[2])
    assert {k: d["reason"] for k, d in dead.items()} == {
        keys[1]: "image_too_large",
        keys[5]: "unit_unreadable",
        keys[6]: "unit_unreadable",
        f"{damaged}#0": "unit_unreadable",
        f"{damaged}#1": "unit_unreadable",
    }
    assert dead[keys[1]]["detail"] == "row 1: 12000x12000 > 100000000 pixels"
    assert dead[keys[5]]["detail"].startswith("row 2: row group 1 (rows 2-3): ")
    assert [pq.read_table(out / "embeddings" / n).num_rows for n in names] == [2, 4, 2]
    assert pq.read_table(out / "embeddings" / names[2]).column("key").to_pylist() == keys[11:]


def test_pipeline_inference_failure_dead_letters_only_that_figure(sample_extract, tmp_path):
    from transforms.embed.handlers import EmbedHandler

    figures = sorted((sample_extract / "extract" / "figures").glob("*.parquet"))
    table = pq.read_table(figures[0]).slice(0, 6)
    images = table.column("image").to_pylist()
    images[1], images[4] = POISON, NAN
    table = table.set_column(
        table.schema.get_field_index("image"), "image", pa.array(images, pa.binary())
    )
    folder = tmp_path / "in" / "extract" / "figures"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-00000-of-00001.parquet")
    handler = EmbedHandler("pixels", None, batch_size=4, loader=exploding_loader)
    out = tmp_path / "out"
    report = _run_embed(["--input", str(tmp_path / "in"), "--output", str(out)], handler)
    keys = table.column("key").to_pylist()
    assert report["balanced"] and report["stages"]["embed"]["out"] == 4
    reasons = {d["key"]: d["reason"] for d in read_dead_letters(out)}
    assert reasons == {keys[1]: "inference_failed", keys[4]: "embedding_not_finite"}


def test_pipeline_a_whole_failed_batch_is_dead_lettered(sample_extract, tmp_path, monkeypatch):
    from transforms.embed import handlers

    def fail(model, batch):  # past embed_batch's per-example nets
        raise MemoryError("out of memory in the forward pass")

    monkeypatch.setattr(handlers, "embed_batch", fail)
    figures = sorted((sample_extract / "extract" / "figures").glob("*.parquet"))
    folder = tmp_path / "in" / "extract" / "figures"
    folder.mkdir(parents=True)
    table = pq.read_table(figures[0]).slice(0, 3)
    pq.write_table(table, folder / figures[0].name)
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in"), "--output", str(out), "--allow_empty"]
    report = _run_embed(argv)
    assert report["balanced"] and report["stages"]["embed"]["out"] == 0
    dead = read_dead_letters(out)
    assert sorted(d["key"] for d in dead) == sorted(table.column("key").to_pylist())
    assert {d["reason"] for d in dead} == {"inference_failed"}
    assert all("out of memory" in d["detail"] for d in dead)
    assert pq.read_table(out / "embeddings" / figures[0].name).num_rows == 0


def _two_files_one_image(sample_extract: Path, folder: Path) -> list[str]:
    """Two figure files; the second's first rows are the first's, under other keys."""
    figures = sorted((sample_extract / "extract" / "figures").glob("*.parquet"))
    table = pq.read_table(figures[0]).slice(0, 4)
    copy = table.slice(0, 2)
    copy = copy.set_column(
        copy.schema.get_field_index("key"),
        "key",
        pa.array([f"copy_{k}" for k in copy.column("key").to_pylist()], pa.string()),
    )
    folder.mkdir(parents=True)
    names = ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    pq.write_table(table, folder / names[0])
    pq.write_table(copy, folder / names[1])
    return names


def test_pipeline_open_clip_writes_caption_embeddings_and_flags_random(sample_extract, tmp_path):
    names = _two_files_one_image(sample_extract, tmp_path / "in" / "extract" / "figures")
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in")]
    model = ["--model", "open_clip:ViT-S-32", "--weights", "none", "--batch_size", "2"]
    report = _run_embed([*argv, "--output", str(out), *model])
    assert report["balanced"] and report["stages"]["embed"]["out"] == 6
    assert report["parameters"]["random_weights"] is True
    assert report["parameters"]["weights_fingerprint"] == "random:seed=0"
    assert _check_embeddings(tmp_path / "in", out, 384, "open_clip:ViT-S-32", True) == 6
    record = json.loads((out / "embed_model.json").read_text())
    assert record["random_weights"] is True and record["caption"] is True
    assert record["weights"] == "none" and record["model_id"] == "open_clip:ViT-S-32"
    assert record["weights_fingerprint"] == "random:seed=0"
    captions = pq.read_table(out / "embeddings" / names[0]).column("caption_embedding")
    assert np.allclose(np.linalg.norm(np.asarray(captions.to_pylist()), axis=1), 1, atol=1e-5)


def test_pipeline_timm_random_weights_same_bytes_in_two_worker_processes(sample_extract, tmp_path):
    names = _two_files_one_image(sample_extract, tmp_path / "in" / "extract" / "figures")
    argv = ["--input", str(tmp_path / "in"), "--model", "timm:test_vit", "--weights", "none"]
    argv += ["--batch_size", "2"]
    parallel = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    for out, extra in (("a", []), ("b", parallel)):
        report = _run_embed([*argv, "--output", str(tmp_path / out), *extra])
        assert report["balanced"] and report["stages"]["embed"]["out"] == 6
        assert report["parameters"]["weights_fingerprint"] == "random:seed=0"
    # Two worker processes draw the same random weights as this one: the same bytes, and
    # the same image in two figure files has one vector.
    for name in names:
        a, b = tmp_path / "a" / "embeddings" / name, tmp_path / "b" / "embeddings" / name
        assert a.read_bytes() == b.read_bytes()
        assert pq.read_table(a).column("model").to_pylist()[0] == "timm:test_vit"
    vectors = [
        pq.read_table(tmp_path / "b" / "embeddings" / n).column("image_embedding").to_pylist()
        for n in names
    ]
    assert vectors[0][:2] == vectors[1][:2] and vectors[0][0] != vectors[0][2]


def test_pipeline_on_real_pmc_figures(pmc_dir, tmp_path):
    extract = tmp_path / "extract"
    run_extract(
        ["--source", str(PMC / "packages"), "--layout", "folder", "--output", str(extract)]
        + ["--log_level", "ERROR"]
    )
    out = tmp_path / "out"
    report = _run_embed(["--input", str(extract), "--output", str(out)])
    stage = report["stages"]["embed"]
    assert report["balanced"] and stage["out"] >= 10 and stage["dead_letter"] == 0
    assert _check_embeddings(extract, out, pixels.DIM, "pixels-v1", False) == stage["out"]


def test_usage_errors_are_one_line(sample_extract, tmp_path, capsys):
    from pipelines.embed import main

    base = ["--input", str(sample_extract), "--output", str(tmp_path / "o")]
    cases = [
        (["--model", "clip"], 2, "--model 'clip' is not a model"),
        (["--model", "open_clip:ViT-S-32"], 2, "needs --weights"),
        (["--model", "timm:test_vit", "--weights", str(tmp_path / "no.pt")], 2, "no such file"),
        (["--model", "open_clip:Nope-32", "--weights", "none"], 2, "open_clip has no model"),
        (["--batch_size", "0"], 2, "--batch_size must be at least 1"),
        (["--max_pixels", "0"], 2, "--max_pixels must be at least 1"),
        (["--device", "tpu"], 2, "invalid choice"),
    ]
    for extra, status, text in cases:
        assert main(base + extra) == status
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "image_too_large, undecoded (default: 89478485)" in shown
    assert "(default: none for --model pixels;" in shown


def test_no_figure_files_is_one_line_unless_allow_empty(tmp_path, capsys):
    from pipelines.embed import main

    (tmp_path / "empty" / "extract" / "figures").mkdir(parents=True)
    argv = ["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "no figure files at" in err and len(err.splitlines()) == 1
    assert main([*argv, "--allow_empty", "--log_level", "ERROR"]) == 0
    record = json.loads((tmp_path / "o" / "embed_model.json").read_text())
    assert record["dim"] == pixels.DIM and not list((tmp_path / "o").glob("embeddings/*"))
