"""faiss on one OpenMP thread for a block: what makes clustering and index bytes the same on
any machine (k-means sums and BLAS blocks otherwise depend on the core count). Pure."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def one_thread():
    """faiss on one OpenMP thread for the block, then as before."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
