"""The extract job on real object stores served on 127.0.0.1, and its selection flags.

S3 is a moto server: the job reads the bucket anonymously (unsigned requests), as it reads
the real `pmc-oa-opendata` bucket. GCS is gcp-storage-emulator: the job reads and writes
gs:// through Beam's filesystem. Both hold the same synthetic corpus the local runs read, so
the figures must come out the same.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from conftest import gcs_emulator as emulated_gcs
from conftest import moto_s3, read_dead_letters, read_table, run_extract

from transforms import storage
from transforms.pmc.sample_corpus import generate_corpus

BUCKET = "pmc-oa-opendata"
GCS_BUCKET = "biomedica-test"
COMMERCIAL = {"CC0", "CC BY", "CC BY-SA", "CC BY-ND"}  # PMC's commercial-use licenses
# Every way boto3 could find credentials; the job must find none and read anonymously.
AWS_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def corpus_files(root: Path) -> list[tuple[str, Path]]:
    return sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())


def by_key(rows: list[dict]) -> dict[str, dict]:
    keyed = {row["key"]: row for row in rows}
    assert len(keyed) == len(rows), "figure keys are not unique"
    return keyed


def assert_same_figures(rows: list[dict], expected: list[dict]) -> None:
    got, want = by_key(rows), by_key(expected)
    assert sorted(got) == sorted(want)
    for key, row in got.items():
        assert row["image"] == want[key]["image"], key
        assert row["image_hash"] == want[key]["image_hash"], key
        assert row["caption"] == want[key]["caption"], key


# ---- what the corpus holds, read from its files (not through the code under test) ---------


def inventory_dates(root: Path) -> dict[str, str]:
    """metadata key -> LastModifiedDate, from the newest inventory manifest's CSV files."""
    manifests = sorted(root.glob("inventory-reports/*/metadata/*/manifest.json"))
    manifest = json.loads(manifests[-1].read_text())
    dates = {}
    for item in manifest["files"]:
        text = gzip.decompress((root / item["key"]).read_bytes()).decode()
        for row in csv.reader(io.StringIO(text)):
            dates[row[1]] = row[3]
    return dates


def corpus_versions(root: Path) -> list[dict]:
    """Every version's metadata JSON, with its inventory date as `modified`."""
    dates = inventory_dates(root)
    versions = []
    for path in sorted((root / "metadata").glob("*.json")):
        meta = json.loads(path.read_text())
        meta["modified"] = dates[f"metadata/{path.name}"].replace(".000Z", "Z")
        versions.append(meta)
    return versions


def latest_versions(versions: list[dict]) -> list[dict]:
    latest: dict[str, dict] = {}
    for meta in versions:
        if meta["pmcid"] not in latest or meta["version"] > latest[meta["pmcid"]]["version"]:
            latest[meta["pmcid"]] = meta
    return sorted(latest.values(), key=lambda m: m["pmcid"])


def kept(meta: dict) -> bool:
    """Kept by default: open access and not retracted."""
    return meta["is_pmc_openaccess"] and not meta["is_retracted"]


def article_ids(rows: list[dict]) -> set[str]:
    return {row["article_accession_id"] for row in rows}


# ---- the corpus and the local runs every other run is compared with -------------------------


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    summary = generate_corpus(str(root), 12, seed=0, image_side=200)
    assert summary["articles_with_two_versions"] >= 1
    assert summary["retracted"] >= 1 and summary["not_open_access"] >= 1
    return root


@pytest.fixture(scope="session")
def local_run(corpus, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("local")
    report = run_extract(["--source", str(corpus), "--output", str(out)])
    return {
        "report": report,
        "figures": read_table(out / "extract" / "figures"),
        "duplicates": read_table(out / "extract" / "duplicates"),
    }


def test_local_baseline(corpus, local_run):
    report, figures = local_run["report"], local_run["figures"]
    assert report["balanced"], report
    assert report["layout"] == "pmc-cloud"
    wanted = [m for m in latest_versions(corpus_versions(corpus)) if kept(m)]
    assert report["stages"]["discover"]["out"] == len(wanted)
    assert article_ids(figures) <= {m["pmcid"] for m in wanted}
    assert len(figures) == report["stages"]["dedupe"]["out"] > 20


# ---- S3: a moto server, read anonymously ------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server():
    # Only the owner client holds (dummy) credentials: it owns the buckets and uploads.
    with moto_s3() as server:
        yield server


def upload_corpus(owner, bucket: str, root: Path, private: frozenset[str] = frozenset()) -> None:
    owner.create_bucket(Bucket=bucket, ACL="public-read")
    for key, path in corpus_files(root):
        acl = "private" if key in private else "public-read"
        owner.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ACL=acl)


@pytest.fixture(scope="session")
def s3_corpus(s3_server, corpus) -> str:
    endpoint, owner = s3_server
    upload_corpus(owner, BUCKET, corpus)
    return endpoint


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """The job's environment: no AWS credentials anywhere boto3 looks."""
    for name in AWS_CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    # On a cloud VM the instance role would be found; the job must not see one here.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert boto3.session.Session().get_credentials() is None


def test_s3_metadata_listing_anonymous(s3_corpus, local_run, no_aws_credentials, tmp_path):
    report = run_extract(
        [
            "--source",
            f"s3://{BUCKET}",
            "--s3_endpoint_url",
            s3_corpus,
            "--s3_anonymous",
            "true",
            "--output",
            str(tmp_path),
        ]
    )
    assert report["balanced"], report
    assert report["layout"] == "pmc-cloud"
    assert report["stages"] == local_run["report"]["stages"]
    figures = read_table(tmp_path / "extract" / "figures")
    assert_same_figures(figures, local_run["figures"])
    assert all(row["image_source"].startswith(f"s3://{BUCKET}/PMC") for row in figures)
    assert read_dead_letters(tmp_path) == []


def test_s3_inventory_auto_anonymous(s3_corpus, local_run, no_aws_credentials, tmp_path):
    # No --s3_anonymous: with no credentials found, the job goes anonymous by itself.
    report = run_extract(
        [
            "--source",
            f"s3://{BUCKET}",
            "--s3_endpoint_url",
            s3_corpus,
            "--inventory",
            "latest",
            "--output",
            str(tmp_path),
        ]
    )
    assert report["balanced"], report
    assert report["parameters"]["inventory"] == "latest"
    assert report["stages"] == local_run["report"]["stages"]
    assert_same_figures(read_table(tmp_path / "extract" / "figures"), local_run["figures"])


def test_s3_legacy_packages_by_glob_with_file_list(
    s3_server, corpus, pmc_dir, no_aws_credentials, tmp_path
):
    """oa_package tar.gz files on S3, found by glob and joined with an oa_file_list.csv."""
    endpoint, owner = s3_server
    bucket = "legacy-packages"
    owner.create_bucket(Bucket=bucket, ACL="public-read")

    def put(key: str, data: bytes) -> None:
        owner.put_object(Bucket=bucket, Key=key, Body=data, ACL="public-read")

    folder = sorted(corpus.glob("PMC*.1"))[0]
    pmcid = folder.name.split(".")[0]
    package = io.BytesIO()
    with tarfile.open(fileobj=package, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=f"{pmcid}/{path.name}")
    put(f"oa_package/aa/bb/{pmcid}.tar.gz", package.getvalue())
    truncated = (pmc_dir / "packages" / "PMC10802347.truncated.tar.gz").read_bytes()
    put("oa_package/cc/dd/PMC10802347.tar.gz", truncated)
    put("oa_package/readme.txt", b"not a package")
    put(
        "oa_file_list.csv",
        (
            "File,Article Citation,Accession ID,Last Updated (YYYY-MM-DD HH:MM:SS),PMID,License\n"
            f"oa_package/aa/bb/{pmcid}.tar.gz,Sample J. 2024; 1:1,{pmcid},2024-01-02 03:04:05,"
            ",CC BY\n"  # PMID may be empty in real lists
            "oa_package/cc/dd/PMC10802347.tar.gz,bioRxiv. 2024,PMC10802347,"
            "2024-01-02 03:04:05,38260464,CC BY-NC-ND\n"
        ).encode(),
    )
    report = run_extract(
        [
            "--source",
            f"s3://{bucket}/oa_package/*/*/*.tar.gz",
            "--file_list",
            f"s3://{bucket}/oa_file_list.csv",
            "--s3_endpoint_url",
            endpoint,
            "--output",
            str(tmp_path),
        ]
    )
    assert report["balanced"], report
    assert report["layout"] == "oa-package"
    assert report["stages"]["discover"]["in"] == report["stages"]["extract_articles"]["out"] == 2
    figures = read_table(tmp_path / "extract" / "figures")
    groups = {row["article_accession_id"]: row["article_license_group"] for row in figures}
    assert groups == {pmcid: "commercial", "PMC10802347": "noncommercial"}
    assert {row["article_citation"] for row in figures} >= {"Sample J. 2024; 1:1"}
    dead = [d for d in read_dead_letters(tmp_path) if d["key"] == "PMC10802347_F1"]
    assert len(dead) == 1 and dead[0]["reason"] == "image_missing"
    assert "truncated" in dead[0]["detail"]

    # A version's folder is a folder: listing PMC1.1 never reaches into PMC1.10.
    put("PMC1.1/a.jpg", b"a")
    put("PMC1.10/b.jpg", b"b")
    config = storage.S3Config(endpoint_url=endpoint, anonymous=True)
    listed = [f.uri for f in storage.list_prefix(f"s3://{bucket}/PMC1.1", config)]
    assert listed == [f"s3://{bucket}/PMC1.1/a.jpg"]


def test_s3_private_objects_are_dead_letters(
    s3_server, corpus, local_run, no_aws_credentials, tmp_path
):
    endpoint, owner = s3_server
    figures = local_run["figures"]
    # Articles whose figures take no part in a duplicate pair, so the rest stays the same.
    in_pairs = {
        key.split("_")[0]
        for dup in local_run["duplicates"]
        for key in (dup["key"], dup["duplicate_of"])
    }
    plain = sorted(article_ids(figures) - in_pairs)
    assert len(plain) >= 3
    no_metadata, no_xml, one_image = plain[:3]
    lost_figure = min(
        (row for row in figures if row["article_accession_id"] == one_image),
        key=lambda row: row["key"],
    )
    private = frozenset(
        {
            f"metadata/{no_metadata}.1.json",
            f"{no_xml}.1/{no_xml}.1.xml",
            f"{one_image}.1/{lost_figure['image_file_name']}",
        }
    )
    bucket = "pmc-oa-private-objects"
    upload_corpus(owner, bucket, corpus, private)
    anonymous = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )
    try:
        anonymous.head_object(Bucket=bucket, Key=min(private))
    except anonymous.exceptions.ClientError as err:
        assert err.response["Error"]["Code"] in ("403", "AccessDenied")
    else:  # moto 5.x checks object ACLs for unsigned requests; an older one might not
        pytest.skip("this moto serves private objects to anonymous requests")

    report = run_extract(
        ["--source", f"s3://{bucket}", "--s3_endpoint_url", endpoint, "--output", str(tmp_path)]
    )
    assert report["balanced"], report
    stages = report["stages"]
    assert stages["discover"]["dead_letter_by_reason"] == {"metadata_unreadable": 1}
    assert stages["extract_articles"]["dead_letter_by_reason"] == {"xml_unreadable": 1}
    assert stages["extract_figures"]["dead_letter_by_reason"] == {"image_missing": 1}
    dead = {row["reason"]: row for row in read_dead_letters(tmp_path)}
    assert set(dead) == {"metadata_unreadable", "xml_unreadable", "image_missing"}
    assert no_metadata in dead["metadata_unreadable"]["key"]
    assert no_xml in dead["xml_unreadable"]["key"]
    assert dead["image_missing"]["key"] == lost_figure["key"]
    for row in dead.values():
        assert "403" in row["detail"] or "Forbidden" in row["detail"] or "Denied" in row["detail"]
    expected = [
        row
        for row in figures
        if row["article_accession_id"] not in (no_metadata, no_xml)
        and row["key"] != lost_figure["key"]
    ]
    assert_same_figures(read_table(tmp_path / "extract" / "figures"), expected)


# ---- GCS: gcp-storage-emulator, through Beam's gs:// filesystem ---------------------------------


@pytest.fixture(scope="module")  # it sets STORAGE_EMULATOR_HOST: not beyond this file
def gcs_emulator(corpus):
    with emulated_gcs(GCS_BUCKET) as client:
        bucket = client.bucket(GCS_BUCKET)
        for key, path in corpus_files(corpus):
            bucket.blob(f"corpus/{key}").upload_from_filename(str(path))
        yield client


def gcs_table(client, prefix: str) -> list[dict]:
    rows: list[dict] = []
    for blob in sorted(client.list_blobs(GCS_BUCKET, prefix=prefix), key=lambda b: b.name):
        if blob.name.endswith(".parquet"):
            rows.extend(pq.read_table(io.BytesIO(blob.download_as_bytes())).to_pylist())
    return rows


def test_gcs_source_and_output(gcs_emulator, local_run, no_credential_retries):
    client = gcs_emulator
    report = run_extract(
        ["--source", f"gs://{GCS_BUCKET}/corpus", "--output", f"gs://{GCS_BUCKET}/out"]
    )
    assert report["balanced"], report
    stored = json.loads(client.bucket(GCS_BUCKET).blob("out/run_report.json").download_as_bytes())
    assert stored["balanced"] and stored["stages"] == report["stages"]
    assert stored["stages"] == local_run["report"]["stages"]
    figures = gcs_table(client, "out/extract/figures/")
    assert_same_figures(figures, local_run["figures"])
    assert all(row["image_source"].startswith(f"gs://{GCS_BUCKET}/corpus/") for row in figures)
    assert len(gcs_table(client, "out/extract/articles/")) == report["stages"]["discover"]["out"]
    names = {blob.name for blob in client.list_blobs(GCS_BUCKET, prefix="out/")}
    assert not any("_staging" in name or "inprogress" in name for name in names), names

    # A second run into the same output replaces the first with --overwrite, and only then.
    with pytest.raises(SystemExit, match="--overwrite"):
        run_extract(["--source", f"gs://{GCS_BUCKET}/corpus", "--output", f"gs://{GCS_BUCKET}/out"])
    report = run_extract(
        [
            "--source",
            f"gs://{GCS_BUCKET}/corpus",
            "--output",
            f"gs://{GCS_BUCKET}/out",
            "--overwrite",
            "--license_groups",
            "commercial",
        ]
    )
    assert report["balanced"], report
    figures = gcs_table(client, "out/extract/figures/")
    assert figures and {row["article_license_group"] for row in figures} == {"commercial"}
    assert len(figures) == report["stages"]["dedupe"]["out"]


# ---- selection: date window, ids, versions, licenses (local corpus) -----------------------------


def shift(moment: str, **delta) -> str:
    parsed = datetime.strptime(moment, "%Y-%m-%dT%H:%M:%SZ") + timedelta(**delta)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_local(corpus: Path, out: Path, *flags: str) -> tuple[dict, list[dict]]:
    report = run_extract(["--source", str(corpus), "--output", str(out), *flags])
    assert report["balanced"], report
    return report, read_table(out / "extract" / "figures")


def test_modified_since_selects_newer_versions(corpus, tmp_path):
    versions = corpus_versions(corpus)
    latest = latest_versions(versions)
    dates = sorted(m["modified"] for m in latest)
    since = dates[len(dates) // 2]
    newer = [m for m in latest if m["modified"] >= since]
    older = [m for m in latest if m["modified"] < since]
    assert newer and older
    # Listed dates come from the inventory (metadata listing would give the files' mtimes).
    report, figures = run_local(
        corpus, tmp_path, "--inventory", "latest", "--modified_since", since
    )
    discover = report["stages"]["discover"]
    assert discover["in"] == len(versions)
    assert discover["filtered_by_reason"]["modified_before_window"] == len(older)
    assert discover["filtered_by_reason"]["superseded_version"] == len(versions) - len(latest)
    assert discover["out"] == sum(1 for m in newer if kept(m))
    assert article_ids(figures) == {m["pmcid"] for m in newer if kept(m)}
    assert report["parameters"]["modified_since"] == since


def test_modified_window_with_all_versions(corpus, tmp_path):
    versions = corpus_versions(corpus)
    second = next(m for m in versions if m["version"] == 2)
    first = next(m for m in versions if m["pmcid"] == second["pmcid"] and m["version"] == 1)
    # An incremental run with every version: what changed after the first version of one
    # article, up to and including its second.
    since, before = (shift(m["modified"], seconds=1) for m in (first, second))
    inside = [m for m in versions if since <= m["modified"] < before]
    assert second in inside and first not in inside
    report, _ = run_local(
        corpus,
        tmp_path,
        "--inventory",
        "latest",
        "--all_versions",
        "--modified_since",
        since,
        "--modified_before",
        before,
    )
    discover = report["stages"]["discover"]
    reasons = discover["filtered_by_reason"]
    assert reasons["modified_before_window"] == sum(1 for m in versions if m["modified"] < since)
    assert reasons.get("modified_after_window", 0) == sum(
        1 for m in versions if m["modified"] >= before
    )
    assert discover["out"] == sum(1 for m in inside if kept(m))
    articles = read_table(tmp_path / "extract" / "articles")
    assert {(a["article_accession_id"], a["article_version"]) for a in articles} == {
        (m["pmcid"], m["version"]) for m in inside if kept(m)
    }


@pytest.mark.parametrize("as_file", [False, True], ids=["list", "file"])
def test_pmcids_selects_exactly_those(corpus, local_run, tmp_path, as_file):
    wanted = sorted(article_ids(local_run["figures"]))[1:4]
    value = ",".join([wanted[0], wanted[1].removeprefix("PMC"), wanted[2]])
    if as_file:
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(wanted) + "\n")
        value = f"@{ids}"
    report, figures = run_local(corpus, tmp_path / "out", "--pmcids", value)
    assert report["stages"]["discover"]["out"] == 3
    assert report["parameters"]["pmcids"] == 3
    versions = corpus_versions(corpus)
    others = sum(1 for m in versions if m["pmcid"] not in wanted)
    assert report["stages"]["discover"]["filtered_by_reason"]["pmcid_not_requested"] == others
    assert article_ids(figures) == set(wanted)
    expected = [r for r in local_run["figures"] if r["article_accession_id"] in wanted]
    # The same figures, save those a duplicate elsewhere in the corpus had hidden.
    assert by_key(expected).keys() <= by_key(figures).keys()


def test_all_versions_gives_more_refs(corpus, local_run, tmp_path):
    versions = corpus_versions(corpus)
    report, figures = run_local(corpus, tmp_path, "--all_versions")
    stages, default = report["stages"], local_run["report"]["stages"]
    assert stages["discover"]["out"] == sum(1 for m in versions if kept(m))
    assert stages["discover"]["out"] > default["discover"]["out"]
    assert "superseded_version" not in stages["discover"].get("filtered_by_reason", {})
    assert stages["extract_articles"]["out"] > default["extract_articles"]["out"]
    assert stages["extract_figures"]["out"] > default["extract_figures"]["out"]
    articles = read_table(tmp_path / "extract" / "articles")
    assert {(a["article_accession_id"], a["article_version"]) for a in articles} == {
        (m["pmcid"], m["version"]) for m in versions if kept(m)
    }
    # Keys carry the version, so two versions' figures never share one.
    assert all(
        row["key"].startswith(f"{row['article_accession_id']}v{row['article_version']}_")
        for row in figures
    )


def test_license_groups_commercial(corpus, local_run, tmp_path):
    report, figures = run_local(corpus, tmp_path, "--license_groups", "commercial")
    latest = [m for m in latest_versions(corpus_versions(corpus)) if kept(m)]
    commercial = {m["pmcid"] for m in latest if m["license_code"] in COMMERCIAL}
    assert figures and {row["article_license_group"] for row in figures} == {"commercial"}
    assert {row["article_license"] for row in figures} <= COMMERCIAL
    assert commercial & article_ids(local_run["figures"]) <= article_ids(figures) <= commercial
    discover = report["stages"]["discover"]
    assert discover["out"] == len(commercial)
    assert discover["filtered_by_reason"]["license_group_not_requested"] == len(latest) - len(
        commercial
    )
    assert report["parameters"]["license_groups"] == ["commercial"]
