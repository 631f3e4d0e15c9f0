"""The clustering model: faiss PCA then k-means, trained on a sample of image embeddings,
saved as one faiss index with a JSON of what it was made from. Pure, Beam-free.

The saved index is `IndexPreTransform(PCAMatrix, IndexFlatL2(centroids))`: searching it with
an embedding gives the nearest centroid in PCA space, so assignment is one faiss call and
the file alone reproduces it next year. Training and assignment run on one OpenMP thread:
faiss's multi-threaded BLAS sums in an order that depends on the thread count, which changes
the model's bytes (measured: 1 vs 2 threads give different centroids); one thread gives the
same bytes on every machine. Beam parallelises across workers instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np

from transforms import storage
from transforms.faiss_threads import one_thread

FORMAT_VERSION = 1
MODEL_FILE = f"cluster_model-v{FORMAT_VERSION}.faiss"
META_FILE = f"cluster_model-v{FORMAT_VERSION}.json"
# k-means needs points to place a centroid: fewer clusters than sample // this are trained.
MIN_POINTS_PER_CLUSTER = 10
# Lloyd iterations: BIOMEDICA-scale samples (100k x 25) settle well within this.
ITERATIONS = 25
# faiss subsamples beyond this many points per centroid (with the seed: deterministic).
MAX_POINTS_PER_CLUSTER = 256
# k-means++ seeding looks at no more than this many points (the sample comes in hash order,
# so its head is a random subset): seeding costs k x this, not k x the sample.
SEEDING_POINTS = 20_000

log = logging.getLogger(__name__)


class ModelMismatch(ValueError):
    """A saved model made for other embeddings (another model id, dimension or weights)."""


def seed_centroids(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ (each step draws 2 + ln k candidates by squared distance and keeps
    the one that lowers the potential most): random initial centroids often start two in
    one true cluster, where Lloyd's iterations leave them (planted clusters gave an adjusted
    Rand index of 0.83 instead of 1.0). numpy's own generator: the same seed, the same
    centroids everywhere."""
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(points[:SEEDING_POINTS], dtype=np.float32)
    columns = np.ascontiguousarray(x.T)
    n = len(x)
    norms = (x * x).sum(axis=1)
    trials = 2 + int(np.log(k))
    chosen = [int(rng.integers(n))]
    nearest = np.maximum(norms - 2 * np.einsum("ij,j->i", x, x[chosen[0]]) + norms[chosen[0]], 0)
    for _ in range(1, k):
        cumulative = np.cumsum(nearest, dtype=np.float64)
        if cumulative[-1] <= 0:  # fewer distinct points than clusters: repeat one
            chosen.append(chosen[-1])
            continue
        draws = rng.random(trials) * cumulative[-1]
        candidates = np.minimum(np.searchsorted(cumulative, draws), n - 1)
        # einsum, not a BLAS product: a multi-threaded BLAS on these small products is
        # several times slower on a busy machine.
        products = np.einsum("ij,jk->ik", x[candidates], columns)
        squared = norms[candidates][:, None] - 2 * products + norms[None, :]
        after = np.minimum(nearest[None, :], np.maximum(squared, 0))
        best = int(np.argmin(after.sum(axis=1, dtype=np.float64)))
        chosen.append(int(candidates[best]))
        nearest = after[best]
    return np.ascontiguousarray(points[chosen], dtype=np.float32)


def capped_clusters(requested: int, sample_size: int) -> int:
    """Clusters that `sample_size` training points can support (at least one)."""
    return max(1, min(requested, sample_size // MIN_POINTS_PER_CLUSTER))


@dataclass
class ClusterModel:
    index: object  # faiss.IndexPreTransform
    meta: dict

    @property
    def clusters(self) -> int:
        return int(self.meta["clusters"])

    def to_bytes(self) -> bytes:
        import faiss

        return faiss.serialize_index(self.index).tobytes()


def train(
    sample: np.ndarray,
    clusters: int,
    pca_dims: int,
    seed: int,
    embedding_model: str,
    embedding_weights: str | None = None,
) -> ClusterModel:
    """PCA to `pca_dims` (at most the dimension and the sample size) and k-means into
    `clusters` (capped by capped_clusters, with a warning) on an (n, d) float32 sample.
    `embedding_weights`: embed_model.json's weights_fingerprint (None where it has none)."""
    import faiss

    sample = np.ascontiguousarray(sample, dtype=np.float32)
    n, dim = sample.shape
    if n == 0:
        raise ValueError("no embedding to train the clustering model on")
    k = capped_clusters(clusters, n)
    if k < clusters:  # the launcher warns; the model's JSON and the report record it
        log.info(
            "--clusters %d capped to %d: the training sample holds %d vectors and each "
            "cluster needs at least %d",
            clusters,
            k,
            n,
            MIN_POINTS_PER_CLUSTER,
        )
    dims = max(1, min(pca_dims, dim, n))
    with one_thread():
        pca = faiss.PCAMatrix(dim, dims)
        pca.train(sample)
        reduced = pca.apply(sample)
        kmeans = faiss.Kmeans(
            dims,
            k,
            niter=ITERATIONS,
            seed=seed,
            verbose=False,
            min_points_per_centroid=1,  # the cap above already warned
            max_points_per_centroid=MAX_POINTS_PER_CLUSTER,
        )
        kmeans.train(reduced, init_centroids=seed_centroids(reduced, k, seed))
        flat = faiss.IndexFlatL2(dims)
        flat.add(kmeans.centroids)
        index = faiss.IndexPreTransform(pca, flat)
        pca.this.disown()  # the IndexPreTransform owns both now
        flat.this.disown()
        index.own_fields = True
    meta = {
        "version": FORMAT_VERSION,
        "embedding_model": embedding_model,
        "embedding_weights": embedding_weights,
        "input_dim": dim,
        "pca_dims": dims,
        "clusters": k,
        "clusters_requested": clusters,
        "capped": k < clusters,
        "sample_size": n,
        "seed": seed,
        "iterations": ITERATIONS,
    }
    return ClusterModel(index, meta)


def assign(model: ClusterModel, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id per row as int64, L2 distance to its centroid in PCA space as float32)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    with one_thread():
        squared, ids = model.index.search(vectors, 1)
    return ids[:, 0].astype(np.int64), np.sqrt(np.maximum(squared[:, 0], 0)).astype(np.float32)


def from_bytes(data: bytes, meta: dict) -> ClusterModel:
    import faiss

    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    return ClusterModel(index, meta)


def meta_bytes(model_bytes: bytes, meta: dict) -> bytes:
    """The model's JSON: its metadata and the sha256 of the .faiss it describes."""
    full = {**meta, "sha256": hashlib.sha256(model_bytes).hexdigest()}
    return (json.dumps(full, indent=2, sort_keys=True) + "\n").encode()


def save(output: str, model_bytes: bytes, meta: dict, guard=None) -> None:
    """OUT/cluster_model-v1.faiss and its JSON (written aside and moved into place)."""
    if guard is not None:
        guard()
    storage.atomic_write(storage.join(output, MODEL_FILE), [model_bytes])
    storage.atomic_write(storage.join(output, META_FILE), [meta_bytes(model_bytes, meta)])


def model_uris(uri: str) -> tuple[str, str]:
    """(.faiss, .json) of --cluster_model: the .faiss file, or a folder holding one."""
    uri = uri.rstrip("/")
    if uri.endswith(".faiss"):
        return uri, uri[: -len(".faiss")] + ".json"
    return storage.join(uri, MODEL_FILE), storage.join(uri, META_FILE)


def read_saved(uri: str) -> tuple[bytes, dict]:
    """The bytes and metadata of a saved model (local, gs:// or s3://), checked against the
    sha256 its JSON holds. Raises ValueError (with the path) on anything amiss."""
    faiss_uri, meta_uri = model_uris(uri)
    try:
        data = storage.read_bytes(faiss_uri)
        meta = json.loads(storage.read_bytes(meta_uri))
    except (OSError, storage.StorageError) as err:
        raise ValueError(f"cannot read the clustering model {faiss_uri}: {err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_uri} is not JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{meta_uri}: not a version {FORMAT_VERSION} clustering model")
    if meta.get("sha256") != hashlib.sha256(data).hexdigest():
        raise ValueError(f"{faiss_uri} does not match the sha256 in {meta_uri}")
    try:
        model = from_bytes(data, meta)
    except RuntimeError as err:
        raise ValueError(f"{faiss_uri} is not a faiss index: {err}") from None
    if model.index.d != meta.get("input_dim") or model.index.ntotal != meta.get("clusters"):
        raise ValueError(f"{faiss_uri} does not match its metadata in {meta_uri}")
    return data, {k: v for k, v in meta.items() if k != "sha256"}


def _fingerprint(value) -> str:
    return value if value else "no weights fingerprint (written before embed recorded one)"


def check_compatible(
    meta: dict, embedding_model: str, dim: int, where: str, weights: str | None = None
) -> None:
    """Refuse a model trained on other embeddings: its ids would mean nothing here. The
    same model id with other weights is other embeddings too: the weights fingerprints
    (embed_model.json's weights_fingerprint, the model's embedding_weights) must be equal,
    or both absent (files older than the fingerprint, which cannot be told apart)."""
    if meta.get("embedding_model") != embedding_model or meta.get("input_dim") != dim:
        raise ModelMismatch(
            f"--cluster_model {where} was trained on {meta.get('embedding_model')} "
            f"embeddings of dim {meta.get('input_dim')}, but --embeddings holds "
            f"{embedding_model} embeddings of dim {dim}"
        )
    trained = meta.get("embedding_weights") or None
    if trained != (weights or None):
        raise ModelMismatch(
            f"--cluster_model {where} was trained on embeddings of weights "
            f"{_fingerprint(trained)}, but --embeddings were made with weights "
            f"{_fingerprint(weights)}"
        )
