"""Nothing a source holds is lost without a trace: every article of a file, every XML of a
folder, every copy of a version (one kept, the others filtered with where they lie), files of
another layout, empty sources, metadata urls outside their version's folder, missing file
lists. Small corpora are built in tmp_path; each run checks rows, dead letters, filtered
records and the report.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from conftest import PMC, read_dead_letters, read_table, run_extract
from test_bad_input import jats, jpeg, tar_gz

from transforms.pmc import cloud
from transforms.pmc.discover import detect_layout
from transforms.storage import S3Config

MULTI = "tidypmc__PMC6358576_PMC6358589_multi"


def wrapper(*articles: bytes) -> bytes:
    """An `<articles>` file holding the given single-article documents."""
    return b"<articles>" + b"".join(articles) + b"</articles>"


def article(pmcid: str, hrefs=("f1",), doi: str = "", title: str = "A title") -> bytes:
    return jats(pmcid, hrefs, doi=doi, title=title, declaration=False)


def write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def read_filtered(out: Path) -> list[dict]:
    rows = []
    for f in sorted(Path(out, "filtered").glob("*.jsonl")):
        rows.extend(json.loads(line) for line in f.read_text().splitlines() if line.strip())
    return rows


def balanced(report: dict) -> None:
    assert report["balanced"] is True, report
    for name, stage in report["stages"].items():
        assert stage["balanced"], name


def keys_unique(out: Path) -> None:
    figures = [f["key"] for f in read_table(out / "extract" / "figures")]
    dead = [d["key"] for d in read_dead_letters(out)]
    assert len(set(figures)) == len(figures)
    assert len(set(dead)) == len(dead)


# ---- the folder layout: wrappers, several XMLs, versions, copies, packages beside -----------


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders") / "src"
    # The real 10-article wrapper, in a folder whose name carries one PMCID.
    (root / MULTI).mkdir(parents=True)
    shutil.copy(PMC / "nxml" / f"{MULTI}.xml", root / MULTI)
    # Several XMLs in one folder, its images shared; one XML is not an article.
    write(
        root / "several",
        {
            "PMC21.xml": jats("PMC21", ("a1",)),
            "PMC22.nxml": jats("PMC22", ("b1",)),
            "notes.xml": b"<notes>not an article</notes>",
            "a1.jpg": jpeg(1),
            "b1.jpg": jpeg(2),
        },
    )
    # XMLs that name no PMCID, in file or in text: keys must still differ.
    for name in ("allofplos__journal.pmed.0030445.xml", "elife-tools__elife00240.xml"):
        (root / "nameless").mkdir(exist_ok=True)
        shutil.copy(PMC / "nxml" / name, root / "nameless")
    # Two versions of one article; the same article in two places.
    write(root / "PMC31.1", {"PMC31.1.xml": jats("PMC31", ("c1",)), "c1.jpg": jpeg(3)})
    write(root / "PMC31.2", {"PMC31.2.xml": jats("PMC31", ("c1",)), "c1.jpg": jpeg(4)})
    write(root / "copyA" / "PMC41", {"PMC41.nxml": jats("PMC41", ("d1",)), "d1.jpg": jpeg(5)})
    write(root / "copyB" / "PMC41", {"PMC41.nxml": jats("PMC41", ("d1",)), "d1.jpg": jpeg(6)})
    # A package beside the folders: another layout, counted.
    (root / "PMC99.tar.gz").write_bytes(tar_gz([("PMC99/PMC99.nxml", jats("PMC99"))]))
    out = root.parent / "out"
    report = run_extract(["--source", str(root), "--layout", "folder", "--output", str(out)])
    return root, out, report


def test_folder_run_balances_with_unique_keys(folder_run):
    _, out, report = folder_run
    balanced(report)
    keys_unique(out)


def test_every_article_of_a_wrapper_is_a_record(folder_run):
    _, out, report = folder_run
    articles = {a["article_accession_id"]: a for a in read_table(out / "extract" / "articles")}
    multi = {k for k, a in articles.items() if a["source_location"].endswith(f"{MULTI}.xml")}
    assert len(multi) == 10 and {"PMC6358576", "PMC6358589"} <= multi
    figures = [
        d
        for d in read_dead_letters(out)
        if d["stage"] == "extract_figures" and d["source"].endswith(f"{MULTI}.xml")
    ]
    assert len(figures) == sum(articles[k]["article_figure_count"] for k in multi) == 41


def test_every_xml_of_a_folder_is_read_or_accounted_for(folder_run):
    _, out, report = folder_run
    articles = read_table(out / "extract" / "articles")
    ids = [a["article_accession_id"] for a in articles]
    assert {"PMC21", "PMC22"} <= set(ids)
    figures = {f["key"]: f for f in read_table(out / "extract" / "figures")}
    assert figures["PMC21_F1"]["image_file_name"] == "a1.jpg"
    assert figures["PMC22_F1"]["image_file_name"] == "b1.jpg"
    dead = {d["key"]: d for d in read_dead_letters(out)}
    assert dead[str(out.parent / "src" / "several" / "notes.xml")]["reason"] == "xml_not_jats"
    # Two XMLs without any PMCID: two articles, their figures under two prefixes.
    nameless = [a for a in articles if "/nameless/" in a["source_location"]]
    assert len(nameless) == 2
    prefixes = {d["key"].rsplit("_", 1)[0] for d in dead.values() if "/nameless/" in d["source"]}
    assert len(prefixes) == 2
    # Each article of the wrapper is one in; of the two copies of PMC31 and PMC41, one each.
    stages = report["stages"]
    assert stages["extract_articles"]["in"] == 10 + 3 + 2 + 1 + 1
    assert stages["discover"]["in"] == 1 + 3 + 2 + 2 + 2 + 1


def test_latest_version_and_one_copy_kept_others_filtered_with_location(folder_run):
    root, out, report = folder_run
    articles = {a["article_accession_id"]: a for a in read_table(out / "extract" / "articles")}
    assert articles["PMC31"]["article_version"] == 2
    assert articles["PMC41"]["source_location"] == str(root / "copyA" / "PMC41" / "PMC41.nxml")
    filtered = {(f["reason"], f["key"]): f for f in read_filtered(out)}
    superseded = filtered["superseded_version", "PMC31.1"]
    assert superseded["stage"] == "discover"
    assert superseded["source"] == str(root / "PMC31.1" / "PMC31.1.xml")
    duplicate = filtered["duplicate_version", "PMC41"]
    assert duplicate["source"] == str(root / "copyB" / "PMC41" / "PMC41.nxml")
    assert str(root / "copyA") in duplicate["detail"]
    by_reason = report["stages"]["discover"]["filtered_by_reason"]
    assert by_reason == {"superseded_version": 1, "duplicate_version": 1, "other_layout": 1}
    assert len(read_filtered(out)) == 3


def test_a_package_beside_folders_is_counted(folder_run):
    root, out, _ = folder_run
    other = [f for f in read_filtered(out) if f["reason"] == "other_layout"]
    assert [(f["key"], f["source"]) for f in other] == [
        ("PMC99.tar.gz", str(root / "PMC99.tar.gz"))
    ]
    assert "--layout oa-package" in other[0]["detail"]


def test_choose_copies_is_deterministic():
    from transforms.pmc.selection import Copy, choose_copies

    copies = [
        Copy(1, "", "b"),
        Copy(2, "", "z"),
        Copy(2, "", "a"),
        Copy(None, "", "c"),
    ]
    kept, left = choose_copies(copies)
    assert [c.location for c in kept] == ["a"]
    assert [(c.location, r) for c, r, _ in left] == [
        ("z", "duplicate_version"),
        ("b", "superseded_version"),
        ("c", "superseded_version"),
    ]
    kept, left = choose_copies(list(reversed(copies)), all_versions=True)
    assert [c.location for c in kept] == ["a", "b", "c"]
    assert [(c.location, r) for c, r, _ in left] == [("z", "duplicate_version")]
    # Unversioned copies: the newest file list date, then the smallest location.
    kept, _ = choose_copies([Copy(None, "2024-01-01", "a"), Copy(None, "2024-02-01", "b")])
    assert kept[0].location == "b"


# ---- --layout auto on a mixed source; empty sources ----------------------------------------


def test_auto_refuses_a_mixed_source(tmp_path):
    root = tmp_path / "src"
    write(root / "PMC1", {"PMC1.nxml": jats("PMC1"), "f1.jpg": jpeg(1)})
    (root / "PMC2.tar.gz").write_bytes(tar_gz([("PMC2/PMC2.nxml", jats("PMC2"))]))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        run_extract(["--source", str(root), "--output", str(out)])
    message = str(err.value)
    assert message.startswith("biomedica extract:") and "\n" not in message
    assert "PMC2.tar.gz" in message and "--layout folder" in message
    assert "--layout oa-package" in message
    assert not out.exists()  # refused before any work
    # The bulk variant beside folders, and a pure package source is fine.
    (root / "PMC2.tar.gz").rename(root / "oa_comm_xml.incr.2024-01-01.tar.gz")
    with pytest.raises(SystemExit, match="--layout oa-bulk"):
        detect_layout(str(root), S3Config())
    shutil.rmtree(root / "PMC1")
    assert detect_layout(str(root), S3Config()) == "oa-bulk"
    # A folder of images whose XML is gone, beside packages, is not skipped silently.
    write(root / "lost", {"g1.jpg": jpeg(2)})
    with pytest.raises(SystemExit, match="g1.jpg"):
        detect_layout(str(root), S3Config())


@pytest.mark.parametrize("source", ["missing", "empty", "nothing*.tar.gz"])
def test_a_source_with_nothing_is_refused_before_the_job(tmp_path, source):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="does not exist or holds no files") as err:
        run_extract(["--source", str(tmp_path / source), "--output", str(out)])
    assert "--allow_empty" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_allow_empty_runs_on_nothing(tmp_path):
    report = run_extract(
        ["--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), "--allow_empty"]
    )
    balanced(report)
    assert report["stages"]["discover"]["in"] == 0


def test_nothing_discovered_is_an_error_after_the_run(tmp_path):
    write(tmp_path / "src" / "docs", {"readme.txt": b"no articles here"})
    with pytest.raises(SystemExit, match="nothing found at --source"):
        run_extract(["--source", str(tmp_path / "src"), "--output", str(tmp_path / "o")])
    report = json.loads((tmp_path / "o" / "run_report.json").read_text())
    assert report["stages"]["discover"]["in"] == 0


def _cloud_version(root: Path, pmcid: str, version: int, xml: bytes, **meta) -> None:
    folder = f"{pmcid}.{version}"
    write(root / folder, {f"{folder}.xml": xml, "f1.jpg": jpeg(int(pmcid[3:]) * 10 + version)})
    record = {
        "pmcid": pmcid,
        "version": version,
        "license_code": "CC BY",
        "xml_url": f"s3://pmc-oa-opendata/{folder}/{folder}.xml",
        "media_urls": [f"s3://pmc-oa-opendata/{folder}/f1.jpg"],
        **meta,
    }
    write(root / "metadata", {f"{folder}.json": json.dumps(record).encode()})


def test_incremental_run_with_nothing_new_says_so_and_succeeds(tmp_path):
    root = tmp_path / "bucket"
    _cloud_version(root, "PMC1", 1, jats("PMC1"))
    argv = ["--source", str(root), "--output", str(tmp_path / "o")]
    report = run_extract([*argv, "--modified_since", "2999-01-01"])
    balanced(report)
    assert report["note"].startswith("nothing new since 2999-01-01")
    assert report["stages"]["discover"]["filtered_by_reason"] == {"modified_before_window": 1}
    # Without a window, nothing selected is an error: here no requested id exists.
    with pytest.raises(SystemExit, match="nothing selected.*pmcid_not_requested 1"):
        run_extract([*argv, "--overwrite", "--pmcids", "PMC999"])
    # Ids not asked for are counted, not written (a --pmcids run over all of PMC).
    report = json.loads((tmp_path / "o" / "run_report.json").read_text())
    assert report["stages"]["discover"]["filtered_by_reason"] == {"pmcid_not_requested": 1}
    assert read_filtered(tmp_path / "o") == []


# ---- PMC Cloud: urls outside the version's folder, copies, wrappers ------------------------

_OWN = "PMC5.1"


@pytest.mark.parametrize(
    "url",
    [
        "s3://pmc-oa-opendata/PMC6.1/PMC6.1.xml",  # another article
        "s3://pmc-oa-opendata/PMC5.2/PMC5.2.xml",  # another version of the same article
        "s3://pmc-oa-opendata/PMC5.1/../PMC6.1/PMC6.1.xml",
        "s3://pmc-oa-opendata/PMC5.1/..",
        "s3://pmc-oa-opendata/PMC5.1/.",
        "s3://pmc-oa-opendata/PMC5.1%2F..%2FPMC6.1%2FPMC6.1.xml",
        "s3://pmc-oa-opendata/PMC5.1/%2e%2e",
        "https://pmc-oa-opendata.s3.amazonaws.com/PMC6.1/PMC6.1.xml?x=/PMC5.1/PMC5.1.xml",
        "s3://pmc-oa-opendata/PMC5.1\\..\\PMC6.1\\PMC6.1.xml",
        "s3://pmc-oa-opendata/PMC5.1/x%252F..%252Fy.xml",
        "s3://pmc-oa-opendata/other/PMC5.1.xml",
        "ftp://nowhere",
    ],
)
def test_xml_url_outside_its_folder_is_refused(url):
    for record in ({"xml_url": url}, {"media_urls": [f"s3://b/{_OWN}/f1.jpg", url]}):
        data = json.dumps({"pmcid": "PMC5", "version": 1, **record}).encode()
        with pytest.raises(cloud.MetadataError) as err:
            cloud.parse_metadata(data, "/root", f"/root/metadata/{_OWN}.json")
        assert err.value.reason == "metadata_url_outside_folder"


@pytest.mark.parametrize(
    "url",
    [
        f"s3://pmc-oa-opendata/{_OWN}/{_OWN}.xml?md5=abc",
        f"https://pmc-oa-opendata.s3.amazonaws.com/{_OWN}/{_OWN}.xml",
        f"s3://another-bucket/{_OWN}/{_OWN}.xml",  # only the relative part is read, under root
        f"s3://pmc-oa-opendata/{_OWN}/PMC5.1%2Exml",
    ],
)
def test_xml_url_in_its_folder_is_read_under_the_root(url):
    data = json.dumps({"pmcid": "PMC5", "version": 1, "xml_url": url}).encode()
    meta = cloud.parse_metadata(data, "/root", f"/root/metadata/{_OWN}.json")
    assert (meta.ref.location, meta.ref.xml_name) == (f"/root/{_OWN}", f"{_OWN}.xml")


def _inventory(root: Path, keys: list[str]) -> Path:
    rows = "".join(f'"pmc-oa-opendata","{k}","2024-05-01T00:00:00.000Z"\n' for k in keys)
    data = root / "inventory" / "data" / "a.csv.gz"
    data.parent.mkdir(parents=True)
    data.write_bytes(gzip.compress(rows.encode()))
    manifest = root / "inventory" / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "fileFormat": "CSV",
                "fileSchema": "Bucket, Key, LastModifiedDate",
                "files": [{"key": "inventory/data/a.csv.gz"}],
            }
        )
    )
    return manifest


def test_pmc_cloud_urls_copies_and_wrappers(tmp_path):
    root = tmp_path / "bucket"
    # PMC51 points its XML (and so its images) into PMC52's folder.
    _cloud_version(
        root, "PMC51", 1, jats("PMC51"), xml_url="s3://pmc-oa-opendata/PMC52.1/PMC52.1.xml"
    )
    _cloud_version(root, "PMC52", 1, jats("PMC52"))
    _cloud_version(root, "PMC53", 1, jats("PMC53"))
    _cloud_version(root, "PMC53", 2, jats("PMC53"))
    # A wrapper: the metadata (license, citation, retracted) is PMC54's alone.
    listed = {"license_code": "CC0", "citation": "Listed citation", "is_retracted": True}
    _cloud_version(
        root, "PMC54", 1, wrapper(article("PMC55", hrefs=()), article("PMC54")), **listed
    )
    keys = [f"metadata/{k}.json" for k in ("PMC51.1", "PMC52.1", "PMC52.1", "PMC53.1")]
    keys += [f"metadata/{k}.json" for k in ("PMC53.2", "PMC53.2", "PMC54.1")]
    manifest = _inventory(root, keys)
    out = tmp_path / "out"
    report = run_extract(
        ["--source", str(root), "--inventory", str(manifest), "--output", str(out)]
        + ["--include_retracted"]
    )
    balanced(report)
    keys_unique(out)
    dead = {d["key"]: d for d in read_dead_letters(out)}
    assert dead["PMC51.1.json"]["reason"] == "metadata_url_outside_folder"
    assert "PMC52.1" in dead["PMC51.1.json"]["detail"]
    articles = {a["article_accession_id"]: a for a in read_table(out / "extract" / "articles")}
    assert set(articles) == {"PMC52", "PMC53", "PMC54", "PMC55"}
    assert articles["PMC53"]["article_version"] == 2
    figures = {f["key"]: f for f in read_table(out / "extract" / "figures")}
    assert set(figures) == {"PMC52_F1", "PMC53_F1", "PMC54_F1"}
    assert figures["PMC52_F1"]["article_accession_id"] == "PMC52"
    filtered = {(f["reason"], f["key"]): f for f in read_filtered(out)}
    assert set(filtered) == {
        ("duplicate_version", "PMC52.1"),
        ("duplicate_version", "PMC53.2"),
        ("superseded_version", "PMC53.1"),
    }
    assert filtered["duplicate_version", "PMC52.1"]["source"].endswith("metadata/PMC52.1.json")

    listed_article, other = articles["PMC54"], articles["PMC55"]
    assert (listed_article["article_license"], listed_article["article_citation"]) == (
        "CC0",
        "Listed citation",
    )
    assert listed_article["article_retracted"] is True
    assert other["article_license"] == "CC BY" and other["article_retracted"] is False
    assert other["article_citation"] != "Listed citation"
    assert other["article_version"] is None
    assert "not_in_listing" in other["article_parse_warnings"]
    assert report["stages"]["extract_articles"]["in"] == 1 + 1 + 2


def test_wrapper_checks_and_duplicates(tmp_path):
    root = tmp_path / "bucket"
    # The listing names an article the wrapper does not hold: every article disagrees.
    _cloud_version(root, "PMC61", 1, wrapper(article("PMC62"), article("PMC63")))
    # The listed article's doi disagrees: only it is a dead letter; the other stands.
    doi = {"doi": "10.1/listed"}
    _cloud_version(
        root, "PMC64", 1, wrapper(article("PMC64", doi="10.1/other"), article("PMC65")), **doi
    )
    # One article twice in a file: the first is kept.
    _cloud_version(root, "PMC66", 1, wrapper(article("PMC66"), article("PMC66", title="Again")))
    out = tmp_path / "out"
    report = run_extract(["--source", str(root), "--output", str(out)])
    balanced(report)
    keys_unique(out)
    dead = {d["key"]: d["reason"] for d in read_dead_letters(out) if d["stage"] != "discover"}
    assert dead == {
        "PMC61.1#1": "metadata_xml_mismatch",
        "PMC61.1#2": "metadata_xml_mismatch",
        "PMC64.1": "metadata_xml_mismatch",
        "PMC66": "duplicate_article",
    }
    articles = {a["article_accession_id"]: a for a in read_table(out / "extract" / "articles")}
    assert set(articles) == {"PMC65", "PMC66"}
    assert articles["PMC66"]["article_title"] == "A title"
    assert report["stages"]["extract_articles"]["in"] == 6


# ---- legacy packages: copies and missing file lists ---------------------------------------


def _file_list(rows: list[tuple[str, str, str]], bulk: bool = False) -> bytes:
    head = (
        "Article File,Article Citation,AccessionID,LastUpdated (YYYY-MM-DD HH:MM:SS),PMID,"
        "License,Retracted\n"
        if bulk
        else "File,Article Citation,Accession ID,Last Updated (YYYY-MM-DD HH:MM:SS),PMID,License\n"
    )
    lines = [f"{path},Cite {acc},{acc},{date},,CC BY,no" for path, acc, date in rows]
    return (head + "\n".join(lines) + "\n").encode()


def test_oa_packages_copies_and_file_list(tmp_path):
    root = tmp_path / "packages"

    def package(pmcid: str, seed: int) -> bytes:
        return tar_gz([(f"{pmcid}/{pmcid}.nxml", jats(pmcid)), (f"{pmcid}/f1.jpg", jpeg(seed))])

    write(root / "a", {"PMC71.tar.gz": package("PMC71", 1)})
    write(root / "b", {"PMC71.tar.gz": package("PMC71", 2), "PMC72.tar.gz": package("PMC72", 3)})
    write(root / "stray", {"PMC79.nxml": jats("PMC79")})  # the folder layout's
    write(root / "images", {"g1.jpg": jpeg(4)})  # an article folder that lost its XML
    listing = tmp_path / "oa_file_list.csv"
    listing.write_bytes(_file_list([("a/PMC71.tar.gz", "PMC71", "2024-01-01 00:00:00")]))
    out = tmp_path / "out"
    argv = ["--source", str(root), "--layout", "oa-package", "--output", str(out)]
    report = run_extract([*argv, "--file_list", str(listing)])
    balanced(report)
    articles = {a["article_accession_id"]: a for a in read_table(out / "extract" / "articles")}
    assert articles["PMC71"]["source_location"].startswith(str(root / "a" / "PMC71.tar.gz"))
    assert articles["PMC71"]["article_parse_warnings"] == []
    assert articles["PMC72"]["article_parse_warnings"] == ["not_in_file_list"]
    filtered = {(f["reason"], f["key"]): f["source"] for f in read_filtered(out)}
    assert filtered == {
        ("duplicate_version", "PMC71"): str(root / "b" / "PMC71.tar.gz"),
        ("other_layout", "PMC79.nxml"): str(root / "stray" / "PMC79.nxml"),
        ("other_layout", "g1.jpg"): str(root / "images" / "g1.jpg"),
    }
    assert report["stages"]["discover"]["packages_not_in_file_list"] == 1

    report = run_extract([*argv, "--overwrite"])
    balanced(report)
    articles = read_table(out / "extract" / "articles")
    assert {a["article_accession_id"] for a in articles} == {"PMC71", "PMC72"}
    assert all(a["article_parse_warnings"] == ["no_file_list"] for a in articles)
    assert report["stages"]["discover"]["packages_without_file_list"] == 3


def test_oa_bulk_copies_and_file_lists(tmp_path):
    root = tmp_path / "bulk"
    listed = "oa_comm_xml.incr.2024-02-01"
    unlisted = "oa_comm_xml.incr.2024-01-01"
    write(
        root,
        {
            f"{listed}.tar.gz": tar_gz(
                [("PMC81.xml", jats("PMC81", title="New")), ("PMC83.xml", jats("PMC83"))]
            ),
            f"{listed}.filelist.csv": _file_list(
                [("PMC81.xml", "PMC81", "2024-02-01 00:00:00")], bulk=True
            ),
            f"{unlisted}.tar.gz": tar_gz(
                [("PMC81.xml", jats("PMC81", title="Old")), ("PMC82.xml", jats("PMC82"))]
            ),
        },
    )
    out = tmp_path / "out"
    report = run_extract(["--source", str(root), "--layout", "oa-bulk", "--output", str(out)])
    balanced(report)
    articles = {a["article_accession_id"]: a for a in read_table(out / "extract" / "articles")}
    assert set(articles) == {"PMC81", "PMC82", "PMC83"}
    assert articles["PMC81"]["article_title"] == "New"
    assert articles["PMC81"]["article_parse_warnings"] == []
    assert articles["PMC82"]["article_parse_warnings"] == ["no_file_list"]
    assert articles["PMC83"]["article_parse_warnings"] == ["not_in_file_list"]
    filtered = [(f["reason"], f["key"], f["source"]) for f in read_filtered(out)]
    assert filtered == [
        ("duplicate_version", "PMC81", f"{root / unlisted}.tar.gz::PMC81.xml"),
    ]
    discover = report["stages"]["discover"]
    assert discover["packages_without_file_list"] == 1
    assert discover["articles_not_in_file_list"] == 1
