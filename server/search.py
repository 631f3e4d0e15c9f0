"""Search over an index: keyword (SQLite FTS5, bm25), semantic (faiss), by image. Beam-free.

Keyword: the query's words, each quoted (so nothing a user types is FTS5 syntax: no column
filters, NEAR, `*` or unbalanced quotes), ranked by bm25: first the samples holding every
word, then, while fewer than k, those holding any of them (rarer words weigh more).
Semantic (models with a text tower only): the query embedded with the dataset's model,
searched in the caption index and the image index.

The lists are merged by reciprocal rank fusion: a sample's score is the sum, over the lists
that hold it, of 1 / (RRF_K + its rank there), ranks from 1. RRF_K = 60 is the constant of
Cormack, Clarke and Buettcher (SIGIR 2009): it keeps one list's top hit from drowning the
agreement of the others, and it needs no calibration between bm25 and cosine scores, which
live on unrelated scales. Ties go to the smaller sample id.

A `where` filter becomes a boolean mask over sample ids (DatasetFiles.matching). faiss
applies it inside the search (IDSelectorBitmap in SearchParameters), so the k nearest are
the k nearest that pass, not the k nearest filtered afterwards; an IVF index whose probed
lists hold fewer than k that pass is searched again with 4x nprobe, up to all its lists.
FTS5 has no such hook: its hits are walked best first, in pages, until k pass, at most
Limits.max_keyword_scan of them.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from urllib.parse import quote

import numpy as np

from server.errors import ApiError
from server.index_files import IndexFiles, Vectors
from server.limits import (
    Limits,
    check_image_header,
    check_k,
    check_query,
    check_upload,
    check_where,
)

RRF_K = 60
PMC_ARTICLE_URL = "https://pmc.ncbi.nlm.nih.gov/articles/{pmcid}/"
_WORD = re.compile(r"\w+", re.UNICODE)


def query_words(q: str, max_terms: int = 32) -> list[str]:
    """The distinct words (`\\w+` runs, lower-cased) of a query, at most max_terms."""
    words: list[str] = []
    for word in _WORD.findall(q.lower()):
        if word not in words:
            words.append(word)
            if len(words) == max_terms:
                break
    return words


def match_expression(q: str, max_terms: int = 32, operator: str = "OR") -> str | None:
    """An FTS5 MATCH expression for the words of `q` (None when it has none): every word a
    quoted string (`\\w+` runs hold no double quote, so none needs escaping), joined with
    OR or AND."""
    if operator not in ("OR", "AND"):
        raise ValueError(f"operator {operator!r}")
    return f" {operator} ".join(f'"{w}"' for w in query_words(q, max_terms)) or None


def fuse(ranked: list[tuple[str, list[int]]], k: int) -> list[tuple[int, float, list[str]]]:
    """Reciprocal rank fusion of (source, ids best first) lists: the best k as (id, score,
    sources), sources in the order the lists came."""
    scores: dict[int, float] = {}
    sources: dict[int, list[str]] = {}
    for source, ids in ranked:
        for rank, sample in enumerate(ids, start=1):
            scores[sample] = scores.get(sample, 0.0) + 1.0 / (RRF_K + rank)
            held = sources.setdefault(sample, [])
            if source not in held:
                held.append(source)
    best = sorted(scores, key=lambda s: (-scores[s], s))[:k]
    return [(s, scores[s], sources[s]) for s in best]


def _selector_bits(mask: np.ndarray) -> np.ndarray:
    # faiss's IDSelectorBitmap tests bit (id & 7) of byte id >> 3: little-endian bit order.
    return np.packbits(mask.astype(bool, copy=False), bitorder="little")


def search_parameters(vectors: Vectors, nprobe: int | None, mask: np.ndarray | None, keep: list):
    """faiss SearchParameters for one search of `vectors`: the IVF's nprobe and the filter.

    The id map (IDMap2) translates a selector of sample ids for the index it wraps, but
    only the top-level one: under IVF-PQ with re-ranking (IndexRefine, which refuses any
    parameters but its own) the filter goes to the IVF inside, translated from the positions
    the IVF holds to sample ids. `keep` holds what faiss only points at, for the search's length.
    """
    import faiss

    def bitmap(bits: np.ndarray):
        packed = _selector_bits(bits)
        selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(packed))
        keep.extend((packed, selector))
        return selector

    if vectors.refine is not None:
        base = faiss.SearchParametersIVF(nprobe=int(nprobe))
        if mask is not None:
            # The IVF numbers vectors by position; the id map's own translator tests a
            # position's sample id against the mask (no per-search array over all vectors).
            translated = faiss.IDSelectorTranslated(vectors.index.id_map, bitmap(mask))
            keep.append(translated)
            base.sel = translated
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = float(vectors.refine.k_factor)
        params.base_index_params = base
        keep.append(base)
        return params
    selector = bitmap(mask) if mask is not None else None
    if vectors.ivf is not None:
        params = faiss.SearchParametersIVF(nprobe=int(nprobe))
        if selector is not None:
            params.sel = selector
        return params
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def vector_search(
    vectors: Vectors, query: np.ndarray, k: int, mask: np.ndarray | None
) -> list[tuple[int, float]]:
    """The k nearest samples (id, inner product) that `mask` admits (all without one)."""
    query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    k = min(k, vectors.index.ntotal)
    if k < 1:
        return []
    nprobe = vectors.nprobe or (vectors.ivf.nprobe if vectors.ivf is not None else None)
    while True:
        keep: list = []  # the selector's bits and objects: alive until the search returns
        params = search_parameters(vectors, nprobe, mask, keep)
        distances, ids = vectors.index.search(query, k, params=params)
        found = [(int(i), float(d)) for i, d in zip(ids[0], distances[0], strict=True) if i >= 0]
        if len(found) >= k or vectors.ivf is None or nprobe >= vectors.ivf.nlist:
            return found
        nprobe = min(vectors.ivf.nlist, nprobe * 4)


def _labels(text) -> list[str]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def hit(row: dict, score: float, sources: list[str]) -> dict:
    """A result as the HTTP API shows it (see the README: Serve)."""
    key, pmcid = row["key"], row.get("article_accession_id") or ""
    path = quote(key, safe="")
    return {
        "id": int(row["id"]),
        "key": key,
        "score": round(float(score), 6),
        "sources": sources,
        "caption": row.get("caption") or "",
        "labels": {
            "primary": _labels(row.get("image_primary_label")),
            "secondary": _labels(row.get("image_secondary_label")),
            "cluster_id": row.get("image_cluster_id"),
        },
        "article_title": row.get("article_title") or "",
        "article_journal": row.get("article_journal") or "",
        "article_year": row.get("article_year"),
        "article_license": row.get("article_license") or "",
        "article_license_group": row.get("article_license_group") or "",
        "pmcid": pmcid,
        "pmc_url": PMC_ARTICLE_URL.format(pmcid=pmcid) if pmcid else None,
        "image_url": f"/samples/{path}.jpg",
        "sample_url": f"/samples/{path}",
    }


class Searcher:
    """The searches of one dataset and its index. `files` is a server.dataset.DatasetFiles
    (its `matching(where)` gives the masks), `embedder` the dataset's model
    (transforms.embed.models.Embedder)."""

    def __init__(self, files, index: IndexFiles, embedder, limits: Limits = Limits()):
        self.files, self.index, self.embedder, self.limits = files, index, embedder, limits
        self.text_vectors = [
            index.vectors[kind] for kind in ("caption", "image") if kind in index.vectors
        ]
        self.semantic_available = bool(embedder is not None and embedder.has_text)
        self._facets: dict | None = None
        self._embed_slots = threading.BoundedSemaphore(max(1, limits.max_concurrent_embeds))

    @contextlib.contextmanager
    def embedding(self):
        """One of Limits.max_concurrent_embeds slots for embedding a query (see Limits);
        503 server_busy after embed_wait_seconds without one."""
        if not self._embed_slots.acquire(timeout=self.limits.embed_wait_seconds):
            raise ApiError(
                503, "server_busy", "too many image or text queries at once; try again shortly"
            )
        try:
            yield
        finally:
            self._embed_slots.release()

    # ---- filters ------------------------------------------------------------------------

    def mask(self, where: str | None) -> np.ndarray | None:
        """The samples `where` admits (None: no filter, all of them)."""
        if where is None:
            return None
        mask = np.asarray(self.files.matching(where), dtype=bool)
        if len(mask) != self.index.samples:
            raise ApiError(
                500, "index_mismatch", "the dataset and the index hold different sample counts"
            )
        return mask

    def _answer(self, query, k, where, semantic, started, total, hits) -> dict:
        return {
            "query": query,
            "k": k,
            "where": where,
            "semantic": semantic,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
            "total_matching": total,
            "hits": hits,
        }

    def _hits(self, ranked: list[tuple[int, float, list[str]]]) -> list[dict]:
        rows = self.index.hit_rows([sample for sample, _, _ in ranked])
        return [hit(rows[s], score, src) for s, score, src in ranked if s in rows]

    # ---- searches -----------------------------------------------------------------------

    def search(self, q: str | None, k: int, where: str | None, semantic: bool = True) -> dict:
        """GET /search: keyword (and semantic) hits merged; with no words, the first k samples
        `where` admits, in id order (all samples without a where)."""
        started = time.perf_counter()
        q, k, where = (
            check_query(q, self.limits),
            check_k(k, self.limits),
            check_where(where, self.limits),
        )
        mask = self.mask(where)
        total = int(mask.sum()) if mask is not None else self.index.samples
        words = query_words(q, self.limits.max_query_terms)
        use_semantic = bool(semantic and self.semantic_available and q and self.text_vectors)
        if not words and not use_semantic:
            ranked = [(s, 0.0, ["filter"]) for s in self.index.first_ids(k, mask)]
            return self._answer(q, k, where, False, started, total, self._hits(ranked))
        lists: list[tuple[str, list[int]]] = []
        if words:
            lists.append(("keyword", self.keyword(q, k, mask)))
        if use_semantic:
            with self.embedding():
                vector = self.embedder.embed_texts([q])[0]
            for vectors in self.text_vectors:
                lists.append(("semantic", [s for s, _ in vector_search(vectors, vector, k, mask)]))
        hits = self._hits(fuse(lists, k))
        return self._answer(q, k, where, use_semantic, started, total, hits)

    def keyword(self, q: str, k: int, mask: np.ndarray | None) -> list[int]:
        """Samples holding every word first (fewer matches to score, and the better hits),
        then, while fewer than k, those holding any."""
        limits = self.limits
        bounds = (limits.max_keyword_scan, limits.max_keyword_matches)
        every = match_expression(q, limits.max_query_terms, "AND")
        found = self.index.keyword(every, k, mask, *bounds)
        if len(found) < k and " AND " in every:
            have = set(found)
            anyone = match_expression(q, limits.max_query_terms, "OR")
            more = self.index.keyword(anyone, k + len(found), mask, *bounds)
            found += [s for s in more if s not in have][: k - len(found)]
        return found

    def search_image(self, data: bytes, name: str, k: int, where: str | None) -> dict:
        """POST /search/image: the samples whose images are nearest the upload's, scored by
        cosine similarity (inner product of unit vectors)."""
        started = time.perf_counter()
        k, where = check_k(k, self.limits), check_where(where, self.limits)
        check_upload(data, self.limits)
        check_image_header(data, self.limits)
        vectors = self.index.vectors.get("image")
        if vectors is None or self.embedder is None:
            raise ApiError(404, "not_found", "this index holds no image vectors")
        mask = self.mask(where)
        total = int(mask.sum()) if mask is not None else self.index.samples
        try:
            with self.embedding():
                vector = self.embedder.embed_images([data])[0]
        except ValueError as err:
            cause = err.__cause__
            if getattr(cause, "reason", "") == "image_too_large":
                raise ApiError(400, "image_too_large", str(cause)) from None
            raise ApiError(400, "image_undecodable", "the image does not decode") from None
        ranked = [(s, score, ["image"]) for s, score in vector_search(vectors, vector, k, mask)]
        return self._answer(name, k, where, False, started, total, self._hits(ranked))

    def facets(self) -> dict:
        """GET /facets: samples per license group, year and primary label (computed once)."""
        if self._facets is None:
            groups = self.index.column_counts("article_license_group")
            years = self.index.column_counts("article_year")
            labels = self.index.label_counts()
            model = self.index.manifest.get("model") or {}
            self._facets = {
                "license_groups": dict(sorted(groups.items())),
                "years": {str(y): years[y] for y in sorted(years)},
                "labels": dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))),
                "samples": self.index.samples,
                "semantic": self.semantic_available,
                "model": model.get("model_id") or model.get("model") or "",
                "random_weights": bool(
                    self.index.manifest.get("random_weights") or model.get("random_weights")
                ),
            }
        return self._facets
