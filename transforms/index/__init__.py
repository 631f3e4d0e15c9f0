"""The search index over a dataset: vectors (faiss), keywords (SQLite FTS5), sample ids."""
