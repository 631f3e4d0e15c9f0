"""What one request may ask of the server: every bound in one place, with its default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_k: int = 100
    max_query_chars: int = 512
    max_where_chars: int = 2000
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 89478485  # Pillow's decompression-bomb bound, checked from the header
    max_subset_samples: int = 100000
