"""MEDLINE parse: fields, deletions, update order, malformed files, flat memory (real slices)."""

from __future__ import annotations

import gzip
import io
import os
import random
import re
import tracemalloc
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from transforms.pubmed.medline import (
    MedlineError,
    file_order_key,
    latest,
    open_medline,
    parse_medline,
    read_medline,
)
from transforms.records import PUBMED_RECORD_SCHEMA, PubmedDeletion, PubmedRecord, as_row

DATA = Path(__file__).parent / "data" / "medline"
BASELINE = DATA / "pubmed20n0014-slice.xml.gz"
UPDATE = DATA / "pubmed21n1298-slice.xml.gz"


def _read(path: Path) -> list:
    return list(read_medline(str(path)))


def _by_pmid(items) -> dict[str, list]:
    grouped = defaultdict(list)
    for item in items:
        grouped[item.pmid].append(item)
    return grouped


def test_baseline_record_fields_match_the_xml():
    items = _read(BASELINE)
    assert [i.pmid for i in items] == ["399296", "399307", "399309", "400955"]
    assert all(isinstance(i, PubmedRecord) for i in items)
    record = items[1]
    assert record == PubmedRecord(
        pmid="399307",
        pmid_version=1,
        article_mesh_terms=["Blood Platelets", "Membranes", "Phospholipases"],
        mesh_descriptor_ids=["D001792", "D008566", "D010740"],
        # Both major through a qualifier only: the descriptors say MajorTopicYN="N".
        mesh_major_topics=["Blood Platelets", "Phospholipases"],
        mesh_qualifiers=[
            "Blood Platelets/enzymology",
            "Membranes/enzymology",
            "Phospholipases/blood",
        ],
        mesh_qualifier_ids=["D001792/Q000201", "D008566/Q000201", "D010740/Q000097"],
        publication_types=["Journal Article", "Review"],
        chemicals=["Phospholipases"],
        date_revised="2000-12-18",
        source_file="pubmed20n0014-slice.xml.gz",
        source_position=1,
    )
    # No MeshHeadingList and no ChemicalList: empty lists, the rest still read.
    assert items[3].article_mesh_terms == [] and items[3].chemicals == []
    assert items[3].publication_types == ["Retraction of Publication"]
    assert items[3].date_revised == "2019-06-30"


def test_update_record_fields_and_its_own_pmid_not_a_cited_one():
    record = next(i for i in _read(UPDATE) if i.pmid == "31594832")
    # Its CommentsCorrections cites PMID 31439803: only MedlineCitation/PMID keys it.
    assert record.article_mesh_terms == [
        "1-Methyl-4-phenyl-1,2,3,6-tetrahydropyridine",
        "Arabidopsis",
        "Arabidopsis Proteins",
        "Florigen",
        "Meristem",
    ]
    assert record.mesh_descriptor_ids == ["D015632", "D017360", "D029681", "D060405", "D018519"]
    assert record.mesh_major_topics == ["Arabidopsis", "Arabidopsis Proteins"]
    assert record.mesh_qualifiers == [
        "1-Methyl-4-phenyl-1,2,3,6-tetrahydropyridine/analogs & derivatives"
    ]
    assert record.mesh_qualifier_ids == ["D015632/Q000031"]
    assert record.publication_types == ["Editorial", "Comment"]
    assert record.chemicals == [
        "Arabidopsis Proteins",
        "Florigen",
        "1-methyl-4-cyclohexyl-1,2,3,6-tetrahydropyridine",
        "1-Methyl-4-phenyl-1,2,3,6-tetrahydropyridine",
    ]
    assert record.date_revised == "2021-06-07"


def test_records_fit_their_arrow_schema():
    table = pa.Table.from_pylist([as_row(i) for i in _read(BASELINE)], schema=PUBMED_RECORD_SCHEMA)
    assert table.num_rows == 4
    assert table.column("mesh_qualifiers").type == pa.list_(pa.string())


def test_delete_citation_yields_each_pmid():
    deletions = [i for i in _read(UPDATE) if isinstance(i, PubmedDeletion)]
    assert [d.pmid for d in deletions] == ["31688362", "31764432", "31895213", "399309"]
    assert {d.source_file for d in deletions} == {"pubmed21n1298-slice.xml.gz"}


@pytest.mark.parametrize("seed", range(3))
def test_later_file_wins_and_deletion_removes(seed):
    items = _read(BASELINE) + _read(UPDATE)
    random.Random(seed).shuffle(items)  # a keyed join groups in no particular order
    grouped = _by_pmid(items)
    updated = latest(grouped["399307"])
    assert isinstance(updated, PubmedRecord)
    assert updated.source_file == "pubmed21n1298-slice.xml.gz"
    assert updated.date_revised == "2021-06-05"
    assert updated.mesh_major_topics == ["Blood Platelets", "Membranes", "Phospholipases"]
    assert isinstance(latest(grouped["399309"]), PubmedDeletion)
    assert latest(grouped["399296"]).source_file == "pubmed20n0014-slice.xml.gz"
    versioned = latest(grouped["30271887"])
    assert (versioned.pmid_version, versioned.date_revised) == (4, "2021-06-07")
    assert latest([]) is None


def test_latest_orders_by_version_then_file_then_position():
    def rec(file, position, version=1):
        return PubmedRecord("1", pmid_version=version, source_file=file, source_position=position)

    early_v2 = rec("pubmed25n0001.xml.gz", 5, version=2)
    late_v1 = rec("pubmed25n1300.xml.gz", 0)
    assert latest([late_v1, early_v2]) is early_v2
    same_file = [rec("pubmed25n1300.xml.gz", 9), rec("pubmed25n1300.xml.gz", 3)]
    assert latest(same_file).source_position == 9
    # A record re-added after its deletion stands again.
    deleted = PubmedDeletion("1", source_file="pubmed25n1301.xml.gz", source_position=0)
    readded = rec("pubmed25n1302.xml.gz", 0)
    assert latest([deleted, readded]) is readded
    assert latest([readded, deleted, rec("pubmed25n0001.xml.gz", 0)]) is readded


def test_file_order_is_by_year_then_number_not_by_folder():
    names = [
        "gs://b/updatefiles/pubmed25n1275.xml.gz",
        "s3://a/baseline/pubmed25n0001.xml.gz",
        "/x/pubmed24n1500.xml.gz",
        "pubmed25n0002.xml.gz",
    ]
    ordered = sorted(names, key=file_order_key)
    assert [re.search(r"pubmed\d+n\d+", n).group(0) for n in ordered] == [
        "pubmed24n1500",
        "pubmed25n0001",
        "pubmed25n0002",
        "pubmed25n1275",
    ]
    assert file_order_key("other.xml.gz") < file_order_key("pubmed20n0001.xml.gz")


def _plain(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (lambda: gzip.compress(_plain(UPDATE)[:-4000]), "xml_malformed"),  # cut short
        (lambda: gzip.compress(_plain(UPDATE).replace(b"</Article>", b"</Artcle>", 1)), None),
        (lambda: UPDATE.read_bytes()[:-300], "gzip_corrupt"),  # the gzip cut short
        (lambda: _plain(UPDATE), "gzip_corrupt"),  # named .gz, not gzip
        (lambda: gzip.compress(b"<html><body>Service unavailable</body></html>"), "not_medline"),
        (lambda: gzip.compress(b""), "xml_malformed"),
    ],
)
def test_malformed_file_raises_medline_error(tmp_path, content, reason):
    path = tmp_path / "pubmed21n1298.xml.gz"
    path.write_bytes(content())
    with pytest.raises(MedlineError) as raised:
        _read(path)
    assert raised.value.source_file == "pubmed21n1298.xml.gz"
    assert raised.value.reason == (reason or "xml_malformed")


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(MedlineError) as raised:
        _read(tmp_path / "pubmed21n9999.xml.gz")
    assert raised.value.reason == "unreadable"


def test_missing_elements_are_tolerated():
    xml = (
        b"<PubmedArticleSet>"
        b"<PubmedArticle><MedlineCitation><PMID>42</PMID></MedlineCitation></PubmedArticle>"
        b"<PubmedArticle><MedlineCitation><Article/></MedlineCitation></PubmedArticle>"
        b"<PubmedArticle><PubmedData/></PubmedArticle>"
        b"<PubmedArticle><MedlineCitation><PMID>43</PMID><DateRevised><Year>2024</Year>"
        b"<Month>Mar</Month></DateRevised><MeshHeadingList><MeshHeading><DescriptorName>"
        b"Humans</DescriptorName></MeshHeading></MeshHeadingList></MedlineCitation>"
        b"</PubmedArticle>"
        b"<DeleteCitation><PMID>7</PMID><PMID/></DeleteCitation>"
        b"</PubmedArticleSet>"
    )
    items = list(parse_medline(io.BytesIO(xml), "f.xml"))
    assert items[0] == PubmedRecord("42", source_file="f.xml", source_position=0)
    assert (items[1].pmid, items[1].date_revised, items[1].source_position) == ("43", "2024-03", 3)
    assert items[1].article_mesh_terms == ["Humans"] and items[1].mesh_descriptor_ids == [""]
    assert items[2] == PubmedDeletion("7", source_file="f.xml", source_position=4)
    assert len(items) == 3


def test_open_medline_streams_plain_and_gzip(tmp_path):
    plain = tmp_path / "pubmed21n1298.xml"
    plain.write_bytes(_plain(UPDATE))
    with open_medline(str(plain)) as a, open_medline(str(UPDATE)) as b:
        assert a.read() == b.read()
    assert [i.pmid for i in read_medline(str(plain))] == [i.pmid for i in _read(UPDATE)]


def _synthetic(path: Path, records: int) -> None:
    """A MEDLINE file of `records` copies of a real record, each with its own PMID."""
    text = _plain(BASELINE).decode()
    head = text[: text.index("<PubmedArticleSet>") + len("<PubmedArticleSet>\n")]
    record = re.search(r"  <PubmedArticle>.*?</PubmedArticle>\n", text, re.S).group(0)
    before, after = record.split('<PMID Version="1">399296</PMID>')
    with gzip.open(path, "wt", compresslevel=1) as out:
        out.write(head)
        for n in range(records):
            out.write(f'{before}<PMID Version="1">{10_000_000 + n}</PMID>{after}')
        out.write("</PubmedArticleSet>\n")


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_growth(path: Path) -> int:
    """How far the resident memory rises past where it stood after the first 1,000 records:
    the parsed tree lives in libxml2's memory, which tracemalloc does not see."""
    start = highest = 0
    for n, _ in enumerate(read_medline(str(path)), 1):
        if n % 500 == 0:
            highest = max(highest, _rss())
            if n == 1_000:
                start = highest = _rss()
    return highest - start


def _traced_peak(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_medline(str(path)))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_with_file_size(tmp_path):
    small, large = tmp_path / "pubmed99n0001.xml.gz", tmp_path / "pubmed99n0002.xml.gz"
    _synthetic(small, 1_000)
    _synthetic(large, 10_000)
    small_count, small_peak = _traced_peak(small)
    large_count, large_peak = _traced_peak(large)
    assert (small_count, large_count) == (1_000, 10_000)
    # Ten times the records, not more than a little more memory (a retained record each would
    # add megabytes: a record object alone is over 1 KB).
    assert large_peak < small_peak * 1.5 + 256 * 1024, (small_peak, large_peak)
    assert large_peak < 8 * 2**20
    if Path("/proc/self/statm").exists():
        # Each record's tree is about 10 KB in libxml2: kept, 10,000 of them would add 100 MB.
        assert _rss_growth(large) < 8 * 2**20


def test_one_element_past_the_record_bound_is_a_dead_file_in_bounded_memory(monkeypatch):
    from transforms.pubmed import medline

    monkeypatch.setattr(medline, "MAX_RECORD_BYTES", 4 << 20)
    head = b'<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version="1">5</PMID>'
    heading = (
        b'<MeshHeading><DescriptorName UI="D1" MajorTopicYN="N">X</DescriptorName></MeshHeading>'
    )
    stream = io.BytesIO(head + b"<MeshHeadingList>" + heading * 300_000)  # 18 MB, one record
    with pytest.raises(medline.MedlineError) as caught:
        list(medline.parse_medline(stream, "huge.xml"))
    assert caught.value.reason == "record_too_large"
    assert stream.tell() < 8 << 20  # refused soon after the bound, not at the end


def test_records_not_under_the_root_are_not_this_files():
    from transforms.pubmed.medline import parse_medline

    xml = (
        b"<PubmedArticleSet><Wrapper><PubmedArticle><MedlineCitation><PMID>7</PMID>"
        b"</MedlineCitation></PubmedArticle></Wrapper><PubmedArticle><MedlineCitation>"
        b"<PMID>8</PMID></MedlineCitation></PubmedArticle></PubmedArticleSet>"
    )
    assert [r.pmid for r in parse_medline(io.BytesIO(xml), "f.xml")] == ["8"]
