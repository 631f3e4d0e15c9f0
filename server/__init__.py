"""`biomedica serve`: search and stream a dataset over HTTP (FastAPI app, Beam-free)."""
