"""The faiss side of `biomedica index`: which index, trained how, filled from codes, and
how good it is. Pure (numpy and faiss), Beam-free.

The index is built in three moves so that the expensive part runs in parallel:
`train` makes an empty, trained index in one process (from a deterministic sample);
`encode` turns a partition's vectors into the codes that index would store (coarse
assignment and product quantisation: the costly part, one call per partition on any
worker); `append` adds a partition's codes and sample ids to the index, partitions in id
order, which gives the same bytes as adding every vector at once.

Every faiss call here runs on one OpenMP thread (`one_thread`): k-means sums and BLAS
blocks then never depend on how many cores a worker has, so the same vectors give the
same index bytes on any machine and runner; the parallelism comes from Beam's workers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from transforms.faiss_threads import one_thread

FLAT = "flat"
IVFPQ = "ivfpq"
KINDS = ("auto", FLAT, IVFPQ)
REFINES = ("sq8", "fp16", "flat", "none")
# faiss factory names of the re-ranking codes kept beside the PQ codes.
_REFINE_FACTORY = {"sq8": "SQ8", "fp16": "SQfp16", "flat": "Flat"}
K = 10  # recall@K
# k-means wants at least this many training points per list (faiss warns below it).
POINTS_PER_LIST = 39
MIN_NORM = 1e-6  # a vector shorter than this is "zero": it has no direction to compare
# When every list probed misses the recall target, the re-ranking step is widened (k_factor
# doubled) up to this: a search-time setting, stored in the index file, costing k_factor x k
# refine-code distances a query (microseconds), where more PQ bytes would mean encoding again.
MAX_K_FACTOR = 64


# ---- checking one vector -------------------------------------------------------------


def check_vector(value, dim: int) -> tuple[np.ndarray | None, str]:
    """(the vector as unit-length float32, "") or (None, why it is unusable): not `dim`
    numbers, NaN or infinity, or zero. embed writes unit vectors; one normalised in float16
    is made exactly unit here, so inner product is cosine."""
    if value is None:
        return None, "no vector"
    try:
        vector = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        return None, "not a list of numbers"
    if vector.shape != (dim,):
        return None, f"{vector.size} values, expected {dim}"
    if not np.isfinite(vector).all():
        return None, "holds NaN or infinity"
    norm = float(np.linalg.norm(vector))
    if norm < MIN_NORM:
        return None, "a zero vector"
    return (vector / norm).astype(np.float32), ""


def sample_rank(key: str, seed: int, purpose: str) -> str:
    """Where a sample stands in a deterministic draw (the training sample, the recall
    queries): a hash of its key, the seed and the purpose, whatever the files or bundles."""
    return hashlib.sha256(f"{purpose}\x00{seed}\x00{key}".encode()).hexdigest()


# ---- which index -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What `train` builds for `count` vectors of `dim` numbers."""

    kind: str  # FLAT or IVFPQ
    factory: str  # faiss index_factory string (metric: inner product)
    dim: int
    count: int
    nlist: int = 0
    pq_m: int = 0
    refine: str = "none"
    k_factor: int = 1

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "factory": self.factory,
            "metric": "inner_product",
            "dim": self.dim,
            "count": self.count,
            "nlist": self.nlist or None,
            "pq_m": self.pq_m or None,
            "refine": self.refine if self.kind == IVFPQ else None,
            "k_factor": self.k_factor if self.kind == IVFPQ and self.refine != "none" else None,
        }


def auto_nlist(count: int, train: int) -> int:
    """Inverted lists for `count` vectors: a power of two, at most 4 sqrt(count) (faiss's
    rule of thumb) and what `train` training points support (39 a list), at least 1."""
    want = min(4 * math.sqrt(max(count, 1)), max(1, train // POINTS_PER_LIST))
    return 1 << max(0, int(math.floor(math.log2(want))))


def auto_pq_m(dim: int) -> int:
    """PQ bytes per vector: the largest divisor of `dim` giving sub-vectors of at least 8
    numbers, or, where that is under dim / 16, the smallest divisor of at least dim / 8
    (512 -> 64, 384 -> 48, 188 -> 47). The refine codes, not these, rank the hits."""
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    below = [m for m in divisors if m * 8 <= dim]
    if below and below[-1] * 16 >= dim:
        return below[-1]
    return next(m for m in divisors if m * 8 >= dim)


def plan(
    count: int,
    dim: int,
    index_type: str = "auto",
    exact_below: int = 100_000,
    train: int = 200_000,
    nlist: int = 0,
    pq_m: int = 0,
    refine: str = "sq8",
    k_factor: int = 4,
) -> Plan:
    """The index for `count` vectors: exact (flat) below `exact_below` under "auto", IVF-PQ
    (with a re-ranking refine step unless refine is "none") above. Raises ValueError for a
    pq_m that does not divide dim or a refine faiss does not have."""
    if index_type not in KINDS:
        raise ValueError(f"index type {index_type!r}: one of {', '.join(KINDS)}")
    if refine not in REFINES:
        raise ValueError(f"refine {refine!r}: one of {', '.join(REFINES)}")
    kind = index_type if index_type != "auto" else (FLAT if count < exact_below else IVFPQ)
    if kind == FLAT:
        return Plan(FLAT, "IDMap2,Flat", dim, count)
    m = pq_m or auto_pq_m(dim)
    if dim % m:
        raise ValueError(f"--pq_m {m} does not divide the vectors' dimension {dim}")
    lists = nlist or auto_nlist(count, min(train, count))
    factory = f"IDMap2,IVF{lists},PQ{m}x8"
    if refine != "none":
        factory += f",Refine({_REFINE_FACTORY[refine]})"
    return Plan(IVFPQ, factory, dim, count, lists, m, refine, k_factor if refine != "none" else 1)


# ---- train, encode, append ----------------------------------------------------------------


def _parts(index) -> tuple:
    """(the IDMap2, the refine wrapper or None, the code-holding indexes in encode order)."""
    import faiss

    idmap = faiss.downcast_index(index)
    inner = faiss.downcast_index(idmap.index)
    if isinstance(inner, faiss.IndexRefine):
        return (
            idmap,
            inner,
            (faiss.downcast_index(inner.base_index),) + (faiss.downcast_index(inner.refine_index),),
        )
    return idmap, None, (inner,)


def train(p: Plan, sample: np.ndarray, seed: int = 0) -> bytes:
    """An empty index of plan `p`, trained on `sample` ((n, dim) unit vectors, in a fixed
    order) with k-means seeded by `seed`; serialised. A flat index needs no training."""
    import faiss

    index = faiss.index_factory(p.dim, p.factory, faiss.METRIC_INNER_PRODUCT)
    if p.kind == IVFPQ:
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if len(sample) < p.nlist:
            raise ValueError(
                f"{len(sample)} training vectors for {p.nlist} inverted lists: pass a larger "
                "--train_sample or a smaller --nlist"
            )
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        ivf.cp.verbose = False
        ivf = faiss.downcast_index(ivf)
        # Polysemous codes (faiss's default for IVF-PQ) are for Hamming-filtered search,
        # which we do not use; their training anneals for minutes.
        ivf.do_polysemous_training = False
        pq = ivf.pq
        pq.cp.seed = seed
        # 64 points per PQ centroid (faiss: 256): the PQ codes only pick candidates that
        # the refine codes re-rank, and training cost falls fourfold.
        pq.cp.max_points_per_centroid = 64
        _, refine, _ = _parts(index)
        if refine is not None:
            refine.k_factor = float(p.k_factor)
        with one_thread():
            index.train(sample)
    return faiss.serialize_index(index).tobytes()


def load(data: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def encode(index, vectors: np.ndarray) -> list[np.ndarray]:
    """The codes each code-holding part of a trained `index` would store for `vectors`
    (one (n, code size) uint8 array per part): what a partition's worker computes."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    _, _, parts = _parts(index)
    with one_thread():
        return [part.sa_encode(vectors) for part in parts]


def append(index, codes: list[np.ndarray], ids: np.ndarray) -> None:
    """Add a partition's codes (from `encode`) and sample ids to `index`, after those added
    before: partitions appended in id order give the bytes of one add_with_ids of all."""
    import faiss

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n = len(ids)
    if n == 0:
        return
    idmap, refine, parts = _parts(index)
    start = idmap.ntotal
    # Inside the IDMap2 the vectors are numbered in order of addition (what IndexRefine
    # needs); the map turns those numbers into sample ids.
    internal = np.arange(start, start + n, dtype=np.int64)
    for part, part_codes in zip(parts, codes, strict=True):
        if len(part_codes) != n:
            raise ValueError(f"{len(part_codes)} codes for {n} ids")
        if isinstance(part, faiss.IndexIVF):
            part.add_sa_codes(part_codes, internal)
        else:
            part.add_sa_codes(part_codes)
    if refine is not None:
        refine.ntotal = start + n
    idmap.ntotal = start + n
    mapped = faiss.vector_to_array(idmap.id_map)
    faiss.copy_array_to_vector(np.concatenate([mapped, ids]), idmap.id_map)


def finish(index) -> None:
    """After the last append: the IDMap2's reverse map (id -> position) from its ids."""
    import faiss

    faiss.downcast_index(index).construct_rev_map()


def set_nprobe(index, nprobe: int | None) -> None:
    import faiss

    if nprobe:
        faiss.extract_index_ivf(index).nprobe = int(nprobe)


def serialize(index) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


# ---- recall ------------------------------------------------------------------------------


def exact_top(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int = K):
    """The exact top-k (inner product) of each query among `vectors` (sample ids `ids`):
    (scores, ids), each (q, k), padded with -inf / -1 where fewer than k vectors."""
    import faiss

    q = len(queries)
    scores = np.full((q, k), -np.inf, np.float32)
    found = np.full((q, k), -1, np.int64)
    if q == 0 or len(vectors) == 0:
        return scores, found
    flat = faiss.IndexFlatIP(vectors.shape[1])
    with one_thread():
        flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
        d, i = flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(vectors)))
    scores[:, : d.shape[1]] = d
    found[:, : i.shape[1]] = np.where(i >= 0, np.asarray(ids, np.int64)[np.maximum(i, 0)], -1)
    return scores, found


def merge_top(a: tuple, b: tuple, k: int = K) -> tuple:
    """Two partial top-k results merged: the k best by score, ties by smaller id (the same
    answer whatever order the partitions come in)."""
    scores = np.concatenate([a[0], b[0]], axis=1)
    found = np.concatenate([a[1], b[1]], axis=1)
    # lexsort: last key first. Missing entries (-inf) sort last.
    order = np.lexsort((np.where(found < 0, np.iinfo(np.int64).max, found), -scores), axis=1)
    order = order[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(found, order, 1)


def recall_at_k(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k ids the approximate top-k holds."""
    total = hits = 0
    for got, want in zip(approximate, exact, strict=True):
        wanted = {int(i) for i in want if i >= 0}
        total += len(wanted)
        hits += len(wanted & {int(i) for i in got if i >= 0})
    return hits / total if total else 1.0


def nprobe_candidates(nlist: int) -> list[int]:
    """1, 2, 4, ... up to nlist (nlist itself last: every list, the most it can give)."""
    out, n = [], 1
    while n < nlist:
        out.append(n)
        n *= 2
    return [*out, nlist]


def tune_nprobe(index, queries: np.ndarray, exact_ids: np.ndarray, target: float, k: int = K):
    """The smallest nprobe (of nprobe_candidates) whose recall@k reaches `target`, and the
    recall it reaches; the largest, and its recall, where none does. (None, recall) for a
    flat index. Leaves `index` set to the nprobe chosen."""
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(queries) == 0 or index.ntotal == 0:
        return None, 1.0
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is None:
        with one_thread():
            _, got = index.search(queries, k)
        return None, recall_at_k(got, exact_ids)
    chosen = None
    for nprobe in nprobe_candidates(ivf.nlist):
        ivf.nprobe = nprobe
        with one_thread():
            _, got = index.search(queries, k)
        chosen = (nprobe, recall_at_k(got, exact_ids))
        if chosen[1] >= target:
            break
    return chosen


def tune(index, queries: np.ndarray, exact_ids: np.ndarray, target: float, k: int = K):
    """tune_nprobe, and where even every list misses `target` on an index that re-ranks
    (IndexRefine), the same again with k_factor doubled, up to MAX_K_FACTOR, until it is
    reached. (nprobe, recall, k_factor: the one stored in `index`, None without refine)."""
    import faiss

    nprobe, recall = tune_nprobe(index, queries, exact_ids, target, k)
    _, refine, _ = _parts(index) if nprobe is not None else (None, None, None)
    if refine is None:
        return nprobe, recall, None
    best = (recall, nprobe, refine.k_factor)
    while recall < target and refine.k_factor * 2 <= MAX_K_FACTOR:
        refine.k_factor = refine.k_factor * 2
        nprobe, recall = tune_nprobe(index, queries, exact_ids, target, k)
        if recall > best[0]:
            best = (recall, nprobe, refine.k_factor)
    recall, nprobe, refine.k_factor = best
    faiss.extract_index_ivf(index).nprobe = int(nprobe)
    return nprobe, recall, int(refine.k_factor)
