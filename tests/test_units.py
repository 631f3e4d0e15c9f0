"""Unit tests of pure pieces: keys, filters, near-duplicate search, duplicate keys, licenses."""

from __future__ import annotations

import itertools
import random

import pyarrow as pa
import pytest

from transforms.images.checks import hamming
from transforms.images.dedupe import Sample, near_pairs, resolve_groups
from transforms.jats.parse import parse_articles, sample_key
from transforms.pmc.licenses import license_group, normalize_license
from transforms.shard.plan import Candidate, ShardPlan, duplicates
from transforms.shard.row_filter import FilterError, compile_where

FIGS = b"""<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>
<article-id pub-id-type="pmcid">PMC7</article-id></article-meta></front><body>
<fig id="F1"><caption><p>two panels</p></caption>
<graphic xlink:href="a"/><graphic xlink:href="b"/></fig>
<fig id="F1_1"><caption><p>an id like a panel</p></caption><graphic xlink:href="c"/></fig>
<fig id="F1.1"><caption><p>same id once dots are gone</p></caption><graphic xlink:href="d"/></fig>
</body></article>"""


def test_sample_keys_never_collide():
    parsed = parse_articles(FIGS)[0]
    keys = [sample_key("PMC7", g) for g in parsed.graphics]
    assert len(keys) == 4 and len(set(keys)) == 4, keys
    assert keys[:2] == ["PMC7_F1_1", "PMC7_F1_2"]
    assert all(k.replace("_", "").replace("-", "").isalnum() for k in keys)


@pytest.mark.parametrize(
    "code, normalized, group",
    [
        ("CC BY", "CC BY", "commercial"),
        ("CC BY-NC", "CC BY-NC", "noncommercial"),
        ("cc-by-nc-nd", "CC BY-NC-ND", "noncommercial"),
        ("CC BY-NC-SA 4.0", "CC BY-NC-SA", "noncommercial"),
        ("CC0", "CC0", "commercial"),
        ("NO-CC CODE", "NO-CC CODE", "other"),
        ("http://creativecommons.org/licenses/by-sa/4.0/", "CC BY-SA", "commercial"),
        ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0", "commercial"),
    ],
)
def test_license_codes_and_groups(code, normalized, group):
    assert normalize_license(code) == normalized
    assert license_group(code) == group


ROW = {"article_year": 2021, "article_keywords": ["mice", "CD8"], "caption": "CD8 T cells"}


def test_filter_checks_arity_and_odd_membership():
    with pytest.raises(FilterError, match="takes 1"):
        compile_where("lower(caption, caption) == 'x'", ROW)
    with pytest.raises(FilterError, match="takes 2"):
        compile_where("contains(caption)", ROW)
    assert compile_where("2021 in article_year", ROW)(ROW) is False  # no crash at run time
    assert compile_where("'CD8' in article_keywords and 'T cells' in caption", ROW)(ROW)
    assert not compile_where("'cd8' in article_keywords", ROW)(ROW)


def test_near_pairs_equal_brute_force():
    rng = random.Random(7)
    samples = []
    for i in range(400):
        value = rng.getrandbits(64)
        samples.append(Sample(f"k{i:04d}", f"s{i}", f"{value:016x}"))
        if i % 9 == 0:
            flipped = value ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64))
            samples.append(Sample(f"n{i:04d}", f"t{i}", f"{flipped:016x}"))
    ordered = sorted(samples, key=lambda s: s.key)
    expected = {
        (a.key, b.key)
        for a, b in itertools.combinations(ordered, 2)
        if hamming(a.phash, b.phash) <= 4
    }
    assert {(a.key, b.key) for a, b in near_pairs(samples, 4)} == expected
    assert len(expected) >= 40
    dropped = resolve_groups(near_pairs(samples, 4))
    assert {d.key for d in dropped} == {max(pair) for pair in expected}  # "k..." < "n..."


def test_duplicate_key_choice_does_not_depend_on_arrival_order():
    rows = [
        Candidate("PMC1_F1", "h2", "c", "a.parquet", 0, "commercial", "x"),
        Candidate("PMC1_F1", "h1", "z", "b.parquet", 9, "other", "y"),  # smallest image hash
        Candidate("PMC1_F1", "h1", "z", "b.parquet", 10, "other", "y"),  # same, later row
        Candidate("PMC2_F1", "h9", "c", "a.parquet", 1, "commercial", "x"),  # no duplicate
    ]
    for order in itertools.permutations(rows):
        dropped = duplicates(list(order))
        assert sorted(c.row for c in dropped) == [0, 10]


def test_shard_plan_ranks_units_in_order_and_leaves_out_duplicates():
    counts = [
        ("b.parquet", {"commercial": 4, "other": 1}),
        ("a.parquet", {"commercial": 5}),
        ("c.parquet", {"commercial": 6}),
    ]
    dropped = [Candidate("k", "", "", "a.parquet", 3, "commercial", "")]
    plan = ShardPlan.build(3, counts, dropped)
    # a: ranks 0-3 (one of its five dropped), b: 4-7, c: 8-13; "other" counts apart.
    assert plan.start == {
        ("a.parquet", "commercial"): 0,
        ("b.parquet", "commercial"): 4,
        ("b.parquet", "other"): 0,
        ("c.parquet", "commercial"): 8,
    }
    assert plan.total == {"commercial": 14, "other": 1}
    assert plan.dropped == {"a.parquet": frozenset({3})}
    assert plan.shard_range("commercial", 4) == (12, 14)
    # Shard 0 (ranks 0-2) lies in a; shard 1 (3-5) straddles a and b; 3 (9-11) lies in c.
    assert plan.holds_whole("a.parquet", "commercial", 0)
    assert not plan.holds_whole("a.parquet", "commercial", 1)
    assert not plan.holds_whole("b.parquet", "commercial", 1)
    assert plan.holds_whole("c.parquet", "commercial", 3)
    assert plan.holds_whole("c.parquet", "commercial", 4)  # the short last one
    assert plan.holds_whole("b.parquet", "other", 0)


def test_parquet_statistics_only_for_short_scalar_columns(tmp_path):
    """Min/max of free text and lists would bloat every footer; filters use the others."""
    import pyarrow.parquet as pq

    from transforms.records import FIGURE_SCHEMA
    from transforms.sinks import parquet_options

    row = {f.name: None for f in FIGURE_SCHEMA}
    row.update(key="PMC1_F1", caption="long " * 500, article_year=2020, image=b"\xff\xd8\xff")
    row.update(article_keywords=["a", "b"])
    path = tmp_path / "t.parquet"
    with pq.ParquetWriter(path, FIGURE_SCHEMA, **parquet_options(FIGURE_SCHEMA)) as writer:
        writer.write_table(pa.Table.from_pylist([row], schema=FIGURE_SCHEMA))
    group = pq.ParquetFile(path).metadata.row_group(0)
    stats = {
        group.column(i).path_in_schema: group.column(i).is_stats_set
        for i in range(group.num_columns)
    }
    assert stats["key"] and stats["article_year"] and stats["article_license_group"]
    assert not stats["caption"] and not stats["article_text"] and not stats["image"]
    assert not stats["article_keywords.list.element"]
