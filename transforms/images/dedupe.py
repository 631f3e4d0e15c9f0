"""Dedupe stage: exact duplicates by sha256, near duplicates by perceptual hash.

Candidate pairs come from grouping, never from comparing everything with everything: equal
sha256 or equal phash group directly, and near phashes meet in LSH buckets (a 64-bit hash cut
into threshold+1 bands: two hashes within the threshold share at least one band exactly, by
the pigeonhole principle). Only the pairs found (few) go to one place, where a union-find
gives every group one survivor: its smallest key, whatever the runner or the order. Every
dropped sample is recorded with the key it duplicates. Groups are connected components:
if A is near B and B near C, C joins A's group even when A and C are further apart than the
threshold (the `distance` recorded is the one to the survivor).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from transforms.images.checks import hamming
from transforms.records import Duplicate

STAGE = "dedupe"
DEFAULT_THRESHOLD = 4


# ---- pure -------------------------------------------------------------------------------


def bands(phash: str, threshold: int) -> list[tuple[int, int]]:
    """(band index, band bits) of a 64-bit hash cut into threshold+1 bands."""
    value = int(phash, 16)
    count = threshold + 1
    edges = [round(i * 64 / count) for i in range(count + 1)]
    out = []
    for index in range(count):
        width = edges[index + 1] - edges[index]
        out.append((index, (value >> edges[index]) & ((1 << width) - 1)))
    return out


@dataclass(frozen=True)
class Sample:
    key: str
    sha256: str
    phash: str


def resolve_groups(edges: list[tuple[Sample, Sample]]) -> list[Duplicate]:
    """One Duplicate per non-survivor of each connected group; the survivor is the min key."""
    parent: dict[str, str] = {}
    samples: dict[str, Sample] = {}

    def find(key: str) -> str:
        root = key
        while parent[root] != root:
            root = parent[root]
        while parent[key] != root:
            parent[key], key = root, parent[key]
        return root

    for a, b in edges:
        for s in (a, b):
            samples[s.key] = s
            parent.setdefault(s.key, s.key)
        ra, rb = find(a.key), find(b.key)
        if ra != rb:
            low, high = sorted((ra, rb))
            parent[high] = low
    out = []
    for key in sorted(samples):
        root = find(key)
        if root == key:
            continue
        sample, survivor = samples[key], samples[root]
        exact = sample.sha256 == survivor.sha256
        out.append(
            Duplicate(
                key=key,
                duplicate_of=root,
                kind="exact" if exact else "near",
                distance=0 if exact else hamming(sample.phash, survivor.phash),
                image_hash=sample.sha256,
                image_phash=sample.phash,
            )
        )
    return out


def star(samples: list[Sample]) -> list[tuple[Sample, Sample]]:
    ordered = sorted(samples, key=lambda s: s.key)
    return [(ordered[0], other) for other in ordered[1:]]


def _popcount(values: np.ndarray) -> np.ndarray:
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def near_pairs(samples: list[Sample], threshold: int) -> list[tuple[Sample, Sample]]:
    """Pairs within `threshold` bits of each other, compared a row of the group at a time in
    numpy (a band group of n samples costs n vector operations, not n²/2 Python calls)."""
    ordered = sorted(samples, key=lambda s: s.key)
    hashes = np.array([int(s.phash, 16) for s in ordered], dtype=np.uint64)
    pairs = []
    for i in range(len(ordered) - 1):
        distances = _popcount(hashes[i + 1 :] ^ hashes[i])
        for j in np.nonzero(distances <= threshold)[0]:
            pairs.append((ordered[i], ordered[i + 1 + int(j)]))
    return pairs


# ---- the stage ------------------------------------------------------------------------------


def _sample(row: dict) -> Sample:
    return Sample(row["key"], row["image_hash"], row["image_phash"])


def _pairs_in_group(element, threshold: int | None = None):
    _, samples = element
    samples = list(samples)
    return near_pairs(samples, threshold) if threshold is not None else star(samples)


@dataclass
class Dedupe(beam.PTransform):
    """Figure rows in; Duplicate records and (dropped key, survivor key) pairs out.

    Rows are not filtered here: rows carry images, and holding them until the global list
    of duplicates is known would cost memory in proportion to the corpus. The writer leaves
    the dropped keys out instead (sinks.WriteArticleFiles).
    """

    threshold: int = DEFAULT_THRESHOLD  # max Hamming distance of near duplicates; -1: exact only

    def __post_init__(self):
        super().__init__()
        if not -1 <= self.threshold <= 16:
            raise ValueError("--near_duplicate_threshold must be between -1 and 16")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("dedupe")
        group.add_argument(
            "--near_duplicate_threshold",
            type=int,
            default=DEFAULT_THRESHOLD,
            help="max Hamming distance between 64-bit perceptual hashes of near duplicates "
            "(0: equal hashes only; -1: exact byte duplicates only)",
        )

    @classmethod
    def from_args(cls, args) -> Dedupe:
        return cls(threshold=args.near_duplicate_threshold)

    def expand(self, rows):
        samples = rows | "Slim" >> beam.Map(_sample)
        edge_sets = [
            samples
            | "BySha" >> beam.Map(lambda s: (s.sha256, s))
            | "GroupSha" >> beam.GroupByKey()
            | "ExactPairs" >> beam.FlatMap(_pairs_in_group)
        ]
        if self.threshold >= 0:
            by_phash = (
                samples
                | "ByPhash" >> beam.Map(lambda s: (s.phash, s))
                | "GroupPhash" >> beam.GroupByKey()
            )
            edge_sets.append(by_phash | "EqualPhashPairs" >> beam.FlatMap(_pairs_in_group))
        if self.threshold > 0:
            threshold = self.threshold
            edge_sets.append(
                by_phash
                | "Representative" >> beam.Map(lambda kv: min(kv[1], key=lambda s: s.key))
                | "Bands"
                >> beam.FlatMap(lambda s: [(band, s) for band in bands(s.phash, threshold)])
                | "GroupBand" >> beam.GroupByKey()
                | "NearPairs" >> beam.FlatMap(_pairs_in_group, threshold)
            )
        duplicates = (
            edge_sets
            | "AllPairs" >> beam.Flatten()
            | "Together" >> beam.combiners.ToList()
            | "Groups" >> beam.FlatMap(resolve_groups)
        )
        dropped = duplicates | "DroppedKeys" >> beam.Map(lambda d: (d.key, d.duplicate_of))
        return {"duplicates": duplicates, "dropped": dropped}
