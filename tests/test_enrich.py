"""`biomedica enrich`: PubMed fields for an extract output's articles, from real MEDLINE slices
(a keyed Beam join) and from E-utilities (a real local HTTP server serving real records).

The extract output comes from the generated sample corpus; its articles' PMIDs are then set to
PMIDs of the real slices (and to the hostile cases), as a PMC article names its PMID.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import json_samples, read_dead_letters, run_extract
from eutils_server import EutilsServer, load_articles

from pipelines import enrich
from pipelines.runner import main_of
from transforms import extract_layout
from transforms.pmc.sample_corpus import generate_corpus
from transforms.records import ARTICLE_SCHEMA, PUBMED_COLUMNS

MEDLINE = Path(__file__).resolve().parent / "data" / "medline"
BASELINE = MEDLINE / "pubmed20n0014-slice.xml.gz"
UPDATE = MEDLINE / "pubmed21n1298-slice.xml.gz"
EMAIL = "curator@example.org"

# article_pmid per article, in the articles file's order, and what enrich must make of it.
CASES = [
    ("399307", "matched"),  # baseline and update: the update's record wins
    ("399309", "deleted"),  # baseline record, deleted by the update's DeleteCitation
    ("399296", "matched"),  # baseline only
    ("30271887", "matched"),  # four versions in the update: version 4 stands
    ("", "no_pmid"),
    ("99999999", "not_found"),  # in no file
    ("PMC123", "invalid_pmid"),
    ("31647768", "matched"),  # update only, MeSH and chemicals
    (" 0399296 ", "matched"),  # the same PMID again, written loosely: both articles get it
    ("31594832", "matched"),
]


def _articles_file(root: Path) -> Path:
    (found,) = sorted((root / "extract" / "articles").glob("*.parquet"))
    return found


def _set_pmids(root: Path, pmids: list[str]) -> None:
    path = _articles_file(root)
    table = pq.read_table(path)
    assert table.num_rows >= len(pmids)
    values = pmids + [""] * (table.num_rows - len(pmids))
    index = table.schema.get_field_index("article_pmid")
    pq.write_table(table.set_column(index, "article_pmid", pa.array(values)), path)


@pytest.fixture(scope="module")
def extract_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("enrich")
    generate_corpus(str(root / "corpus"), 12, seed=5, image_side=96)
    out = root / "extract"
    assert run_extract(["--source", str(root / "corpus"), "--output", str(out)])["balanced"]
    _set_pmids(out, [pmid for pmid, _ in CASES])
    return out


def run_enrich(*argv) -> dict:
    return enrich.run([str(a) for a in argv] + ["--log_level", "ERROR"])


def rows_of(output: Path) -> list[dict]:
    return pq.read_table(_articles_file(output)).to_pylist()


@pytest.fixture(scope="module")
def medline_run(extract_out, tmp_path_factory):
    out = tmp_path_factory.mktemp("enriched") / "out"
    report = run_enrich(
        "--input", extract_out, "--output", out, "--medline", str(MEDLINE / "*.xml.gz")
    )
    return out, report


def test_medline_join_statuses_and_report(medline_run):
    out, report = medline_run
    rows = rows_of(out)
    assert [r["article_pubmed_status"] for r in rows[: len(CASES)]] == [s for _, s in CASES]
    assert report["balanced"]
    stage = report["stages"]["enrich"]
    assert stage["in"] == stage["out"] == len(rows)
    expected = {}
    for row in rows:
        expected[row["article_pubmed_status"]] = expected.get(row["article_pubmed_status"], 0) + 1
    assert stage["by_status"] == expected
    medline = report["stages"]["medline"]
    assert (medline["in"], medline["out"], medline["dead_letter"]) == (2, 2, 0)
    assert medline["records"] == 12 and medline["deletions"] == 4
    # Only versions of PMIDs some article names go into the join: 399307 (2), 399309 (a
    # record and its deletion), 399296, 30271887 (4 versions), 31647768, 31594832.
    assert medline["not_wanted"] == 16 - 11


def test_distinct_pmids_combine():
    import apache_beam as beam
    import numpy as np
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.pubmed.stage import DistinctPmids, wanted

    values = [7, 3, 7, 10**11, 3] * 30000
    with TestPipeline() as p:
        got = (
            p
            | beam.Create(values, reshuffle=False)
            | beam.CombineGlobally(DistinctPmids())
            | beam.Map(lambda a: (a.dtype.name, a.tolist()))
        )
        assert_that(got, equal_to([("int64", [3, 7, 10**11])]))
    pmids = np.array([3, 7, 10**11], np.int64)
    assert [wanted(pmids, p) for p in ("3", "7", "100000000000", "4", "x", "9" * 40)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_update_wins_and_fields_are_the_records(medline_run):
    rows = {r["article_pmid"]: r for r in rows_of(medline_run[0])}
    revised = rows["399307"]
    # The update slice's copy of this baseline record: later DateRevised, and "enzymology" of
    # Membranes made a major topic (see tests/data/medline/README.md).
    assert revised["article_pubmed_source"] == UPDATE.name
    assert revised["article_pubmed_date_revised"] == "2021-06-05"
    assert revised["article_mesh_terms"] == ["Blood Platelets", "Membranes", "Phospholipases"]
    assert "Membranes" in revised["article_mesh_major_topics"]
    assert "Membranes/enzymology" in revised["article_mesh_qualifiers"]
    assert revised["article_chemicals"] == ["Phospholipases"]
    assert revised["article_publication_types"] == ["Journal Article", "Review"]
    assert len(revised["article_mesh_ids"]) == 3 and revised["article_mesh_ids"][0].startswith("D")

    baseline_only = rows["399296"]
    assert baseline_only["article_pubmed_source"] == BASELINE.name
    assert "Food Microbiology" in baseline_only["article_mesh_terms"]
    assert rows[" 0399296 "]["article_mesh_terms"] == baseline_only["article_mesh_terms"]

    update_only = rows["31647768"]
    assert update_only["article_mesh_terms"][:2] == ["Coronary Artery Disease", "Humans"]
    assert "Vitamin D Deficiency" in update_only["article_mesh_major_topics"]

    for pmid in ("399309", "", "99999999", "PMC123"):
        row = rows[pmid]
        assert all(row[c] in ([], "") for c in PUBMED_COLUMNS if c != "article_pubmed_status")


def test_the_latest_pmid_version_stands(medline_run):
    from transforms.pubmed.medline import read_medline

    versions = [r for r in read_medline(str(UPDATE)) if r.pmid == "30271887"]
    assert sorted(v.pmid_version for v in versions) == [1, 2, 3, 4]
    fourth = next(v for v in versions if v.pmid_version == 4)
    row = next(r for r in rows_of(medline_run[0]) if r["article_pmid"] == "30271887")
    assert row["article_publication_types"] == fourth.publication_types
    assert row["article_pubmed_date_revised"] == fourth.date_revised


def test_rows_kept_whole_figures_linked_not_copied(medline_run, extract_out):
    out, _ = medline_run
    before = pq.read_table(_articles_file(extract_out))
    after = pq.read_table(_articles_file(out))
    assert after.schema.names == ARTICLE_SCHEMA.names
    keep = [c for c in before.column_names if c not in PUBMED_COLUMNS]
    assert after.select(keep).equals(before.select(keep))  # text included, same order
    assert not (out / "extract" / "figures").exists()
    link = json.loads((out / "extract" / "figures.json").read_text())
    assert link["figures"] == str(extract_out / "extract" / "figures")
    layout = extract_layout.layout(str(out))
    assert layout.linked and layout.figures == str(extract_out / "extract" / "figures")


def test_malformed_file_is_a_dead_letter_and_the_others_still_join(extract_out, tmp_path):
    # A later update file that revises 399296 and adds 77777777, then breaks off: nothing it
    # said may stand.
    from eutils_server import HEAD

    records = load_articles(BASELINE)
    revised = records["399296"].replace(b"<DescriptorName", b"<DescriptorName", 1)
    revised = revised.replace(b"Abattoirs", b"Should Not Appear")
    added = records["399296"].replace(b">399296</PMID>", b">77777777</PMID>")
    medline = tmp_path / "medline"
    medline.mkdir()
    for path in (BASELINE, UPDATE):
        shutil.copy(path, medline / path.name)
    broken = HEAD + revised + b"\n" + added + b"\n<PubmedArticle><MedlineCitation><PMID>1"
    (medline / "pubmed21n1299.xml.gz").write_bytes(gzip.compress(broken))
    extract = tmp_path / "extract"
    shutil.copytree(extract_out, extract)
    _set_pmids(extract, [p for p, _ in CASES[:-1]] + ["77777777"])
    out = tmp_path / "out"
    report = run_enrich("--input", extract, "--output", out, "--medline", medline / "*")
    assert report["balanced"]
    stage = report["stages"]["medline"]
    assert (stage["in"], stage["out"], stage["dead_letter"]) == (3, 2, 1)
    assert stage["records_dropped"] == 2
    (letter,) = read_dead_letters(out)
    assert letter["stage"] == "medline" and letter["key"] == "pubmed21n1299.xml.gz"
    assert letter["reason"] == "xml_malformed"
    rows = {r["article_pmid"]: r for r in rows_of(out)}
    assert rows["399296"]["article_pubmed_source"] == BASELINE.name
    assert "Abattoirs" in rows["399296"]["article_mesh_terms"]
    assert rows["77777777"]["article_pubmed_status"] == "source_failed"
    assert rows["399307"]["article_pubmed_status"] == "matched"


def test_not_gzip_and_not_medline_files_are_dead_letters(extract_out, tmp_path):
    medline = tmp_path / "medline"
    medline.mkdir()
    shutil.copy(BASELINE, medline / BASELINE.name)
    (medline / "pubmed21n0001.xml.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (medline / "pubmed21n0002.xml.gz").write_bytes(gzip.compress(b"<html><body/></html>"))
    # A small file that inflates to 64 MB of one text node: read streaming, refused by lxml's
    # bound on a text node, in bounded time and memory.
    bomb = b"<PubmedArticleSet><PubmedArticle>" + b"x" * (64 << 20)
    (medline / "pubmed21n0003.xml.gz").write_bytes(gzip.compress(bomb, 9))
    assert (medline / "pubmed21n0003.xml.gz").stat().st_size < 1 << 20
    out = tmp_path / "out"
    report = run_enrich("--input", extract_out, "--output", out, "--medline", medline / "*")
    assert report["balanced"]
    reasons = {d["key"]: d["reason"] for d in read_dead_letters(out)}
    assert reasons == {
        "pubmed21n0001.xml.gz": "gzip_corrupt",
        "pubmed21n0002.xml.gz": "not_medline",
        "pubmed21n0003.xml.gz": "xml_malformed",
    }
    rows = {r["article_pmid"]: r for r in rows_of(out)}
    assert rows["399296"]["article_pubmed_status"] == "matched"


def test_deterministic_across_runs_and_workers(medline_run, extract_out, tmp_path):
    out = tmp_path / "again"
    run_enrich(
        "--input",
        extract_out,
        "--output",
        out,
        "--medline",
        str(UPDATE),
        "--medline",
        str(BASELINE),  # given in the other order: PubMed's numbering orders them
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_threading",
    )
    assert _articles_file(out).read_bytes() == _articles_file(medline_run[0]).read_bytes()


def test_an_enrich_output_is_taken_as_input(medline_run, extract_out, tmp_path):
    first, _ = medline_run
    out = tmp_path / "twice"
    report = run_enrich("--input", first, "--output", out, "--medline", str(BASELINE))
    assert report["balanced"]
    rows = {r["article_pmid"]: r for r in rows_of(out)}
    # The baseline alone: 399307's baseline record, and 399309 not deleted.
    assert rows["399307"]["article_pubmed_date_revised"] == "2000-12-18"
    assert rows["399309"]["article_pubmed_status"] == "matched"
    assert rows["31647768"]["article_pubmed_status"] == "not_found"
    link = json.loads((out / "extract" / "figures.json").read_text())
    assert link["figures"] == str(extract_out / "extract" / "figures")


def test_stale_link_refused(extract_out, tmp_path):
    copy = tmp_path / "extract"
    shutil.copytree(extract_out, copy)
    first = tmp_path / "first"
    run_enrich("--input", copy, "--output", first, "--medline", str(BASELINE))
    report = copy / "run_report.json"
    report.write_text(report.read_text().replace('"balanced": true', '"balanced": true ', 1))
    main = main_of(enrich.run, "enrich")
    with pytest.raises(SystemExit, match="another run rewrote them; run enrich again"):
        enrich.run(["--input", str(first), "--output", str(tmp_path / "second"), "--eutils"])
    assert main(["--input", str(first), "--output", str(tmp_path / "third"), "--eutils"]) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give --medline GLOB or --eutils"),
        (["--eutils", "--medline", "x"], "give --medline GLOB or --eutils"),
        (["--medline", "/nonexistent/pubmed*.xml.gz"], "matches no file"),
        (["--eutils"], "--ncbi_email"),
        (["--eutils", "--ncbi_email", EMAIL, "--eutils_base_url", "ftp://x"], "not an http"),
        (["--medline", str(BASELINE), "--medlin", "x"], "--medlin"),
    ],
)
def test_usage_errors_before_work(extract_out, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.delenv("NCBI_EMAIL", raising=False)
    out = tmp_path / "out"
    code = main_of(enrich.run, "enrich")(["--input", str(extract_out), "--output", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_two_medline_files_of_one_name_refused(extract_out, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(BASELINE, tmp_path / folder / BASELINE.name)
    argv = ["--input", str(extract_out), "--output", str(tmp_path / "out")]
    argv += ["--medline", str(tmp_path / "a" / "*"), "--medline", str(tmp_path / "b" / "*")]
    assert main_of(enrich.run, "enrich")(argv) == 2
    assert "have one name" in capsys.readouterr().err


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        enrich.run(["--help"])
    shown = capsys.readouterr().out
    for flag in (
        "--input",
        "--output",
        "--medline",
        "--eutils",
        "--ncbi_email",
        "--ncbi_api_key",
        "--eutils_base_url",
        "--eutils_cache",
        "--eutils_max_retries",
        "--eutils_timeout",
        "--allow_empty",
        "--overwrite",
    ):
        assert flag in shown, flag


# ---- E-utilities ----------------------------------------------------------------------------

EUTILS_CASES = ["399296", "399297", "399306", "399331", "99999999", "", "399297"]


@pytest.fixture
def eutils_extract(extract_out, tmp_path):
    copy = tmp_path / "extract"
    shutil.copytree(extract_out, copy)
    _set_pmids(copy, EUTILS_CASES)
    return copy


def eutils_run(server, extract, out, *more):
    return run_enrich(
        "--input",
        extract,
        "--output",
        out,
        "--eutils",
        "--ncbi_email",
        EMAIL,
        "--eutils_base_url",
        server.base_url,
        *more,
    )


def test_eutils_with_429_and_500_retried(eutils_extract, tmp_path):
    with EutilsServer(load_articles()) as server:
        server.fail_next(429, 1)
        server.fail_next(500, 1)
        report = eutils_run(server, eutils_extract, tmp_path / "out")
        assert server.problems == []
        requests = server.efetch_requests()
    assert report["balanced"]
    stage = report["stages"]["eutils"]
    # 5 distinct valid PMIDs in one batch, answered on the third request.
    assert (stage["in"], stage["out"], stage["dead_letter"]) == (5, 5, 0)
    assert stage["found"] == 4 and stage["not_found"] == 1 and stage["requests"] == 3
    assert len(requests) == 3 and sorted(requests[-1].pmids, key=int) == sorted(
        {p for p in EUTILS_CASES if p}, key=int
    )
    statuses = [r["article_pubmed_status"] for r in rows_of(tmp_path / "out")][:7]
    assert statuses == ["matched"] * 4 + ["not_found", "no_pmid", "matched"]
    rows = rows_of(tmp_path / "out")
    assert rows[0]["article_pubmed_source"] == "efetch"
    assert "Food Microbiology" in rows[0]["article_mesh_terms"]


def test_eutils_persistent_500_and_timeouts_are_dead_letters(eutils_extract, tmp_path):
    with EutilsServer(load_articles()) as server:
        server.fail_next(500, 3)
        report = eutils_run(server, eutils_extract, tmp_path / "out", "--eutils_max_retries", "2")
    assert report["balanced"]
    stage = report["stages"]["eutils"]
    assert (stage["in"], stage.get("out", 0), stage["dead_letter"]) == (5, 0, 5)
    letters = read_dead_letters(tmp_path / "out")
    assert {d["key"] for d in letters} == {"399296", "399297", "399306", "399331", "99999999"}
    assert {d["reason"] for d in letters} == {"http_500"}
    statuses = [r["article_pubmed_status"] for r in rows_of(tmp_path / "out")][:7]
    assert statuses == ["fetch_failed"] * 5 + ["no_pmid", "fetch_failed"]
    assert report["stages"]["enrich"]["by_status"]["fetch_failed"] == 6

    with EutilsServer(load_articles()) as server:
        server.delay_next(3.0, 2)
        report = eutils_run(
            server,
            eutils_extract,
            tmp_path / "slow",
            "--eutils_max_retries",
            "1",
            "--eutils_timeout",
            "0.5",
        )
    assert {d["reason"] for d in read_dead_letters(tmp_path / "slow")} == {"timeout"}
    assert report["balanced"]


def test_eutils_rerun_asks_only_for_what_is_missing(eutils_extract, tmp_path):
    out = tmp_path / "out"
    with EutilsServer(load_articles()) as server:
        first = eutils_run(server, eutils_extract, out)
        assert len(server.efetch_requests()) == 1
        again = eutils_run(server, eutils_extract, out, "--overwrite")
        assert len(server.efetch_requests()) == 1  # the cache (kept by --overwrite) answered
    assert again["stages"]["eutils"]["from_cache"] == 5
    assert first["stages"]["enrich"]["by_status"] == again["stages"]["enrich"]["by_status"]
    assert (out / enrich.CACHE).is_dir()


# ---- end to end: the real enrich output sharded and filtered ---------------------------------


def test_shard_and_subset_of_the_enrich_output_carry_the_real_mesh(medline_run, tmp_path):
    from pipelines import shard, subset

    out, _ = medline_run
    articles = {r["article_accession_id"]: r for r in rows_of(out)}
    dataset = tmp_path / "dataset"
    report = shard.run(["--input", str(out), "--output", str(dataset), "--log_level", "ERROR"])
    assert report["balanced"]
    samples = json_samples(dataset)
    assert samples
    for sample in samples.values():
        article = articles[sample["article_accession_id"]]
        for column in PUBMED_COLUMNS:
            assert sample[column] == article[column], (sample["key"], column)
    # (The test set the articles' PMIDs; the figure rows keep the generated ones.)
    accession = next(a for a, r in articles.items() if r["article_pmid"] == "399307")
    revised = [s for s in samples.values() if s["article_accession_id"] == accession]
    assert revised and revised[0]["article_mesh_terms"][1] == "Membranes"

    chosen = tmp_path / "membranes"
    picked = subset.run(
        [
            "--input",
            str(dataset),
            "--output",
            str(chosen),
            "--where",
            "'Membranes' in article_mesh_major_topics and article_pubmed_status == 'matched'",
            "--log_level",
            "ERROR",
        ]
    )
    assert picked["balanced"]
    assert set(json_samples(chosen)) == {s["key"] for s in revised}


# ---- what a hostile input does ---------------------------------------------------------------


def test_an_articles_file_damaged_past_its_pmids_is_a_dead_letter(extract_out, tmp_path):
    extract = tmp_path / "extract"
    shutil.copytree(extract_out, extract)
    good = _articles_file(extract)
    table = pq.read_table(good)
    titles = pa.array([[t] for t in table.column("article_title").to_pylist()])
    bad = table.set_column(table.schema.get_field_index("article_title"), "article_title", titles)
    pq.write_table(bad, good.parent / "part-99999-of-99999.parquet")  # PMIDs fine, titles not
    out = tmp_path / "out"
    report = run_enrich("--input", extract, "--output", out, "--medline", str(BASELINE))
    assert report["balanced"]
    stage, files = report["stages"]["enrich"], report["stages"]["enrich_files"]
    assert stage["in"] == 2 * table.num_rows and stage["out"] == stage["dead_letter"]
    assert (files["in"], files["out"], files["dead_letter"]) == (2, 1, 1)
    (letter,) = read_dead_letters(out)
    assert letter["key"] == "part-99999-of-99999.parquet"
    assert letter["reason"] == "articles_file_invalid" and "article_title" in letter["detail"]
    written = sorted(p.name for p in (out / "extract" / "articles").iterdir())
    assert written == [good.name]  # no partial file, no leftover


def test_folders_sidecars_and_upper_case_names_in_a_medline_glob(extract_out, tmp_path, caplog):
    medline = tmp_path / "medline"
    (medline / "sub").mkdir(parents=True)
    shutil.copy(BASELINE, medline / "PUBMED20N0014.XML.GZ")
    shutil.copy(UPDATE, medline / UPDATE.name)
    (medline / f"{UPDATE.name}.md5").write_text("MD5(x)= 0123\n")
    out = tmp_path / "out"
    report = run_enrich("--input", extract_out, "--output", out, "--medline", medline / "*")
    assert report["stages"]["medline"]["in"] == 2 and report["stages"]["medline"]["out"] == 2
    assert "left out 1 matches" in caplog.text  # the .md5 (a glob matches no folder)
    statuses = [r["article_pubmed_status"] for r in rows_of(out)][: len(CASES)]
    assert statuses == [s for _, s in CASES]
    # A folder given as the glob is not a MEDLINE file either.
    code = main_of(enrich.run, "enrich")(
        ["--input", str(extract_out), "--output", str(tmp_path / "o2"), "--medline", str(medline)]
    )
    assert code == 2


def test_a_failed_file_makes_every_unmatched_pmid_source_failed(extract_out, tmp_path):
    medline = tmp_path / "medline"
    medline.mkdir()
    shutil.copy(BASELINE, medline / BASELINE.name)
    (medline / "pubmed21n0001.xml.gz").write_bytes(gzip.compress(b"<PubmedArticleSet><Pub"))
    out = tmp_path / "out"
    report = run_enrich("--input", extract_out, "--output", out, "--medline", medline / "*")
    rows = {r["article_pmid"]: r["article_pubmed_status"] for r in rows_of(out)}
    # Not "not_found": the broken file may have held them.
    assert rows["99999999"] == rows["31647768"] == "source_failed"
    assert rows["399296"] == "matched" and rows[""] == "no_pmid"
    assert report["stages"]["enrich"]["by_status"]["source_failed"] >= 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--medline", str(BASELINE), "--ncbi_api_key", "K"], "--ncbi_api_key apply to --eutils"),
        (["--medline", str(BASELINE), "--eutils_cache", "/tmp/c"], "--eutils_cache apply"),
        (["--eutils", "--ncbi_email", EMAIL, "--eutils_timeout", "nan"], "--eutils_timeout"),
        (["--eutils", "--ncbi_email", EMAIL, "--eutils_max_retries", "-1"], "max_retries"),
    ],
)
def test_eutils_flag_errors_before_work(extract_out, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = main_of(enrich.run, "enrich")(["--input", str(extract_out), "--output", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_cache_that_cannot_be_written_or_lies_in_the_input(extract_out, tmp_path, capsys):
    main = main_of(enrich.run, "enrich")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = ["--input", str(extract_out), "--eutils", "--ncbi_email", EMAIL]
    with EutilsServer(load_articles()) as server:
        argv += ["--eutils_base_url", server.base_url]
        code = main([*argv, "--output", str(tmp_path / "o1"), "--eutils_cache", str(blocker / "c")])
        assert code == 2 and "cannot be written" in capsys.readouterr().err
        inside = str(extract_out / "cache")
        code = main([*argv, "--output", str(tmp_path / "o2"), "--eutils_cache", inside])
        assert code == 2 and "which this run reads" in capsys.readouterr().err
        assert not (extract_out / "cache").exists()
        assert server.efetch_requests() == []
