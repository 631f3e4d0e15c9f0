"""Where every sample goes: shard ranks from row counts, and which duplicate key stays.

Pure and Beam-free. A shard run reads its input as units (Parquet files, or a source
dataset's shards) in sorted order; within a license group, samples are ranked in (unit, row)
order and shard = rank // samples_per_shard. The ranks come from counts taken before any
image is read, so every unit knows where its samples go and the bytes are written once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Candidate:
    """A row that holds a key another row may hold too."""

    key: str
    image_hash: str
    caption: str
    unit: str
    row: int
    group: str
    source: str  # where the row came from, for its dead letter

    def rank(self) -> tuple:
        # The rows' content decides first, so the same rows keep the same one however the
        # input is split into files; position breaks exact ties only.
        return (self.image_hash, self.caption, self.unit, self.row)


def duplicates(candidates: list[Candidate]) -> list[Candidate]:
    """The rows to drop: of rows sharing a key, all but the one of smallest rank()."""
    by_key: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_key[candidate.key].append(candidate)
    dropped = []
    for same in by_key.values():
        if len(same) > 1:
            dropped.extend(sorted(same, key=Candidate.rank)[1:])
    return dropped


@dataclass
class ShardPlan:
    """Start rank and sample count of every (unit, group), and the rows left out."""

    samples_per_shard: int
    start: dict[tuple[str, str], int] = field(default_factory=dict)
    count: dict[tuple[str, str], int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, frozenset[int]] = field(default_factory=dict)
    units: frozenset[str] = frozenset()  # the units placed (an unreadable one is not)

    @classmethod
    def build(
        cls, samples_per_shard: int, counts: list[tuple[str, dict[str, int]]], dropped: list
    ) -> ShardPlan:
        """From (unit, {group: rows that passed the checks}) and the dropped Candidates."""
        plan = cls(samples_per_shard)
        less: dict[tuple[str, str], int] = defaultdict(int)
        rows: dict[str, set[int]] = defaultdict(set)
        for candidate in dropped:
            less[(candidate.unit, candidate.group)] += 1
            rows[candidate.unit].add(candidate.row)
        plan.dropped = {unit: frozenset(r) for unit, r in rows.items()}
        plan.units = frozenset(unit for unit, _ in counts)
        for unit, groups in sorted(counts):
            for group, n in sorted(groups.items()):
                kept = n - less[(unit, group)]
                plan.start[(unit, group)] = plan.total.get(group, 0)
                plan.count[(unit, group)] = kept
                plan.total[group] = plan.total.get(group, 0) + kept
        return plan

    def shard_range(self, group: str, shard: int) -> tuple[int, int]:
        """[first, end) ranks of a shard."""
        first = shard * self.samples_per_shard
        return first, min(first + self.samples_per_shard, self.total.get(group, 0))

    def holds_whole(self, unit: str, group: str, shard: int) -> bool:
        """Whether every sample of the shard comes from this unit (so it writes it alone)."""
        start = self.start.get((unit, group), 0)
        first, end = self.shard_range(group, shard)
        return start <= first and end <= start + self.count.get((unit, group), 0)
