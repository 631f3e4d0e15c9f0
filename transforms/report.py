"""The run report: counts per stage such that in = out + filtered + dead letters (+ duplicates).

Counts are computed as data inside the pipeline (not runner metrics, which not every runner
commits), so the report is written by the job itself on any runner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import apache_beam as beam

from transforms import storage

# The balance each stage of the extract job must keep: in == sum of these counts.
EXTRACT_STAGES = {
    "discover": ("out", "filtered", "dead_letter"),
    "extract_articles": ("out", "filtered", "dead_letter"),
    "extract_figures": ("out", "dead_letter"),
    "dedupe": ("out", "duplicates"),
}


def ones(name: str):
    """A Map label and function counting each element once under `name`."""
    return beam.Map(lambda _: (name, 1))


def dead_letter_counts(dead_letter) -> list[tuple[str, int]]:
    return [
        (f"{dead_letter.stage}.dead_letter", 1),
        (f"{dead_letter.stage}.dead_letter_by_reason.{dead_letter.reason}", 1),
    ]


def filtered_counts(item) -> list[tuple[str, int]]:
    # A Filtered record, or a bare (stage, reason) pair.
    stage, reason = (item.stage, item.reason) if hasattr(item, "reason") else item
    return [(f"{stage}.filtered", 1), (f"{stage}.filtered_by_reason.{reason}", 1)]


def build_report(pairs: list[tuple[str, int]], header: dict, stage_terms: dict) -> dict:
    stages: dict[str, dict] = {
        name: {"in": 0, **{t: 0 for t in terms}} for name, terms in stage_terms.items()
    }
    for name, value in sorted(pairs):
        stage, _, rest = name.partition(".")
        bucket = stages.setdefault(stage, {"in": 0})
        if "." in rest:
            group, _, reason = rest.partition(".")
            bucket.setdefault(group, {})[reason] = value
        else:
            bucket[rest] = value
    for name, terms in stage_terms.items():
        bucket = stages[name]
        bucket["balanced"] = bucket["in"] == sum(bucket.get(t, 0) for t in terms)
    return {
        **header,
        "balanced": all(stages[n]["balanced"] for n in stage_terms),
        "stages": stages,
    }


def _write(pairs, uri: str, header: dict, stage_terms: dict):
    report = build_report(pairs, header, stage_terms)
    storage.write_bytes(uri, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    yield report


@dataclass
class WriteRunReport(beam.PTransform):
    """(count name, n) pairs in; run_report.json written once all of them are known."""

    uri: str
    stage_terms: dict
    header: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__init__()

    def expand(self, pairs):
        return (
            pairs
            | "Sum" >> beam.CombinePerKey(sum)
            | "Together" >> beam.combiners.ToList()
            | "Write" >> beam.FlatMap(_write, self.uri, self.header, self.stage_terms)
        )


def read_report(uri: str) -> dict:
    return json.loads(storage.read_bytes(uri))
