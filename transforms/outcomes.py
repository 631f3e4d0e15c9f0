"""Output tags shared by every stage: errors and deliberate exclusions are data too."""

from __future__ import annotations

import re

import apache_beam as beam

from transforms.records import DeadLetter, Filtered

DEAD = "dead_letter"
FILTERED = "filtered"  # a Filtered record: left out on purpose by a filter
LISTED = "listed"  # one element per record a stage was handed: its "in" count
# An object's repr names its memory address (`<_io.BytesIO object at 0x7f...>`), which differs
# from run to run; dead letters must not.
_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")


def dead(stage: str, key: str, reason: str, detail: str = "", source: str = ""):
    detail = _ADDRESS.sub("", detail)[:2000]
    return beam.pvalue.TaggedOutput(DEAD, DeadLetter(stage, key, reason, detail, source))


NOTED = "noted"  # (stage, counter name): a count the report shows beside the balance


def filtered(stage: str, reason: str, key: str = "", detail: str = "", source: str = ""):
    return beam.pvalue.TaggedOutput(FILTERED, Filtered(stage, key, reason, detail[:2000], source))


def noted(stage: str, counter: str):
    return beam.pvalue.TaggedOutput(NOTED, (stage, counter))


def listed(stage: str):
    return beam.pvalue.TaggedOutput(LISTED, stage)
