"""Bad input never crashes the pipeline and is never dropped silently: each gets a dead letter.

Unit tests call the pure functions on each bad input; three corpus runs (folder, oa-package and
pmc-cloud layouts) mix good and bad articles and check the dead letters, the written rows and
the run report's balance.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import read_dead_letters, read_table, run_extract
from PIL import Image

from transforms.images import checks
from transforms.jats.media import resolve
from transforms.jats.parse import JatsError, parse_articles
from transforms.pmc import cloud, legacy

# ---- building bad inputs ----------------------------------------------------------------------

_FIG = (
    '<fig id="{id}"><label>Figure {n}</label><caption><p>Caption of figure {n} in {pmcid}.</p>'
    '</caption><graphic xlink:href="{href}"/></fig>'
)


def jats(
    pmcid: str = "PMC1",
    hrefs: tuple[str, ...] = ("f1",),
    doctype: str = "",
    doi: str = "",
    title: str = "A title",
    declaration: bool = True,
) -> bytes:
    figs = "".join(
        _FIG.format(id=f"F{n}", n=n, href=href, pmcid=pmcid) for n, href in enumerate(hrefs, 1)
    )
    refs = "".join(
        f'<p>As <xref ref-type="fig" rid="F{n}">Figure {n}</xref> shows.</p>'
        for n in range(1, len(hrefs) + 1)
    )
    doi_el = f'<article-id pub-id-type="doi">{doi}</article-id>' if doi else ""
    text = (
        ('<?xml version="1.0" encoding="UTF-8"?>\n' if declaration else "")
        + doctype
        + '<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article">'
        "<front><journal-meta><journal-title-group><journal-title>J Test</journal-title>"
        "</journal-title-group></journal-meta><article-meta>"
        f'<article-id pub-id-type="pmc">{pmcid.removeprefix("PMC")}</article-id>{doi_el}'
        f"<title-group><article-title>{title}</article-title></title-group>"
        '<permissions><license xlink:href="https://creativecommons.org/licenses/by/4.0/">'
        "<license-p>CC BY</license-p></license></permissions>"
        f"</article-meta></front><body><sec>{refs}{figs}</sec></body></article>"
    )
    return text.encode("utf-8")


XXE = '<!DOCTYPE article [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
LAUGHS = (
    '<!DOCTYPE article [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    + "]>"
)


def xxe_article(pmcid: str) -> bytes:
    return jats(pmcid, doctype=XXE, title="&xxe;")


def laughs_article(pmcid: str) -> bytes:
    return jats(pmcid, doctype=LAUGHS, title="&lol9;")


def latin1_article(pmcid: str) -> bytes:
    # Declared UTF-8, but the title's é is a single cp1252 byte.
    return jats(pmcid, title="Caf__E9__ au lait").replace(b"__E9__", b"\xe9")


def noise(seed: int, size: tuple[int, int] = (80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def jpeg(seed: int, size=(80, 60)) -> bytes:
    return encode(noise(seed, size), "JPEG", quality=90)


def png(seed: int, size=(80, 60)) -> bytes:
    return encode(noise(seed, size), "PNG")


def cmyk_jpeg(seed: int) -> bytes:
    return encode(noise(seed).convert("CMYK"), "JPEG", quality=90)


def png16(seed: int) -> bytes:
    values = np.random.default_rng(seed).integers(0, 65535, (60, 80)).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    return encode(image, "PNG")


def corrupt_jpeg(seed: int) -> bytes:
    data = jpeg(seed, (200, 200))
    return data[: len(data) // 2]  # a valid header, the scan cut short


def garbage_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return jpeg(seed)[:200] + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A small real PNG whose IHDR claims a huge size (CRC fixed so the header is valid)."""
    data = bytearray(png(7, (32, 32)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _passwd_marker() -> str:
    try:
        first = Path("/etc/passwd").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "root:x:0:0"
    return first[:20] or "root:x:0:0"


# ---- unit level: XML ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "xml",
    [b"<article><front><article-meta>", b"<article>&undefined;</article>", b"not xml at all <"],
)
def test_malformed_xml(xml):
    with pytest.raises(JatsError) as err:
        parse_articles(xml)
    assert err.value.reason == "xml_malformed"


@pytest.mark.parametrize("xml", [b"", b"   \n\t", None])
def test_empty_xml(xml):
    with pytest.raises(JatsError) as err:
        parse_articles(xml)
    assert err.value.reason == "xml_empty"


def test_xml_without_article():
    with pytest.raises(JatsError) as err:
        parse_articles(b"<html><body/></html>")
    assert err.value.reason == "xml_not_jats"


def test_xxe_is_refused():
    with pytest.raises(JatsError) as err:
        parse_articles(xxe_article("PMC1"))
    assert err.value.reason == "xml_forbidden_entity"
    assert "xxe" in err.value.detail
    assert _passwd_marker() not in str(err.value)


@pytest.mark.parametrize(
    "xml",
    [
        laughs_article("PMC1"),  # declared and used: libxml2 stops the expansion itself
        jats("PMC1", doctype=LAUGHS),  # declared only
        jats(
            "PMC1", doctype='<!DOCTYPE article [<!ENTITY a "&b;"><!ENTITY b "&a;">]>', title="&a;"
        ),
    ],
    ids=["laughs-used", "laughs-declared", "entity-loop"],
)
def test_entity_expansion_is_refused(xml):
    with pytest.raises(JatsError) as err:
        parse_articles(xml)
    assert err.value.reason == "xml_forbidden_entity"


def test_non_utf8_bytes_are_repaired_and_marked():
    (item,) = parse_articles(latin1_article("PMC1"))
    assert item.article.article_title == "Café au lait"
    assert item.article.article_parse_warnings
    assert item.article.article_parse_warnings[0].startswith("encoding_repaired")
    assert len(item.graphics) == 1


def test_too_large_xml():
    with pytest.raises(JatsError) as err:
        parse_articles(jats("PMC1"), max_bytes=100)
    assert err.value.reason == "xml_too_large"


def test_the_template_is_valid():
    (item,) = parse_articles(jats("PMC42", hrefs=("f1", "f2")))
    assert item.article.article_accession_id == "PMC42"
    assert item.article.article_license == "CC BY"
    assert [g.figure_id for g in item.graphics] == ["F1", "F2"]
    assert item.graphics[0].caption == "Figure 1 Caption of figure 1 in PMC42."
    assert item.graphics[0].context == ["As Figure 1 shows."]


# ---- unit level: images -------------------------------------------------------------------------


def test_missing_image_does_not_resolve():
    name, why = resolve("f1", ["f2.jpg", "other.png"])
    assert name is None and "f1" in why


def test_thumbnail_alone_does_not_resolve():
    name, why = resolve("f1", ["f1.gif", "f2.gif", "f2.jpg"])
    assert name is None and "thumbnail" in why


@pytest.mark.parametrize(
    ("data", "reasons"),
    [
        (corrupt_jpeg(1), {"image_corrupt"}),
        (garbage_jpeg(2), {"image_corrupt", "image_unreadable"}),
        (jpeg(3)[:20], {"image_unreadable"}),
        (b"\x00" * 100, {"image_unreadable"}),
    ],
    ids=["truncated-jpeg", "garbage-body-jpeg", "header-only-jpeg", "zeros"],
)
def test_corrupt_images(data, reasons):
    with pytest.raises(checks.ImageRejected) as err:
        checks.check_image(data)
    assert err.value.reason in reasons


def test_empty_image():
    with pytest.raises(checks.ImageRejected) as err:
        checks.check_image(b"")
    assert err.value.reason == "image_empty"


@pytest.mark.parametrize("size", [(1, 1), (1, 500), (500, 19)])
def test_tiny_image(size):
    with pytest.raises(checks.ImageRejected) as err:
        checks.check_image(encode(noise(4, size), "PNG"))
    assert err.value.reason == "image_too_small"


def test_huge_dimensions_are_refused_without_decoding():
    data = huge_png()
    assert Image.open(io.BytesIO(data)).size == (100_000, 100_000)
    with pytest.raises(checks.ImageRejected) as err:
        checks.check_image(data)
    assert err.value.reason == "image_too_large"
    assert "100000x100000" in err.value.detail


def test_max_pixels_bound_on_a_normal_image():
    with pytest.raises(checks.ImageRejected) as err:
        checks.check_image(jpeg(5), max_pixels=1000)
    assert err.value.reason == "image_too_large"


def test_max_bytes_bound():
    with pytest.raises(checks.ImageRejected) as err:
        checks.check_image(jpeg(5), max_bytes=10)
    assert err.value.reason == "image_too_large"


@pytest.mark.parametrize(
    ("data", "source_mode"), [(cmyk_jpeg(6), "CMYK"), (png16(7), "I;16")], ids=["cmyk", "16bit"]
)
def test_cmyk_and_16bit_are_converted(data, source_mode):
    checked = checks.check_image(data)
    assert checked.converted is True
    assert checked.source_mode == source_mode
    assert checked.data[:3] == b"\xff\xd8\xff"
    out = Image.open(io.BytesIO(checked.data))
    assert out.format == "JPEG" and out.mode in ("RGB", "L")
    assert out.size == (80, 60) == (checked.width, checked.height)


def test_a_good_jpeg_is_kept_byte_for_byte():
    data = jpeg(8)
    checked = checks.check_image(data)
    assert checked.converted is False and checked.data == data


# ---- unit level: packages and metadata ---------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["PMC9/../../evil.nxml", "/abs/PMC9.nxml", "PMC9/sub/../../x.jpg", "C:/x.nxml"]
)
def test_unsafe_member_path_refuses_the_package(name):
    data = tar_gz([("PMC9/PMC9.nxml", jats("PMC9")), (name, b"x")])
    with pytest.raises(legacy.PackageError) as err:
        legacy.read_package(io.BytesIO(data))
    assert err.value.reason == "unsafe_member_path"


def test_truncated_package_keeps_what_was_read():
    data = tar_gz([("PMC9/PMC9.nxml", jats("PMC9")), ("PMC9/f1.png", png(9, (400, 400)))])
    package = legacy.read_package(io.BytesIO(data[: len(data) // 2]))
    assert package.xml == jats("PMC9")
    assert package.truncated
    assert package.media == {}


@pytest.mark.parametrize("data", [b"", b"\x1f\x8b\x08\x00garbage", b"plain text"])
def test_unreadable_package(data):
    with pytest.raises(legacy.PackageError) as err:
        legacy.read_package(io.BytesIO(data))
    assert err.value.reason == "archive_unreadable"


def test_empty_archive():
    with pytest.raises(legacy.PackageError) as err:
        legacy.read_package(io.BytesIO(tar_gz([])))
    assert err.value.reason in ("archive_empty", "archive_unreadable")


def test_bulk_package_with_unsafe_and_truncated_members():
    data = tar_gz([("PMC001xxxxxx/PMC1.xml", jats("PMC1")), ("../PMC2.xml", jats("PMC2"))])
    items = list(legacy.iter_bulk_xml(io.BytesIO(data)))
    assert [(n, e) for n, _, e in items] == [
        ("PMC001xxxxxx/PMC1.xml", ""),
        ("../PMC2.xml", "unsafe_member_path"),
    ]
    big = tar_gz([("PMC001xxxxxx/PMC3.xml", jats("PMC3") + b" " * 200_000)])
    items = list(legacy.iter_bulk_xml(io.BytesIO(big[: len(big) // 2])))
    assert items[-1][1] is None and items[-1][2].startswith("archive_truncated")


def _metadata(pmcid: str, version: int = 1, **extra) -> dict:
    folder = f"{pmcid}.{version}"
    record = {
        "pmcid": pmcid,
        "version": version,
        "pmid": "",
        "doi": f"10.9999/{pmcid.lower()}",
        "title": "A title",
        "citation": "J Test. 2024; 1:1",
        "is_pmc_openaccess": True,
        "is_retracted": False,
        "license_code": "CC BY",
        "xml_url": f"s3://pmc-oa-opendata/{folder}/{folder}.xml",
        "media_urls": [f"s3://pmc-oa-opendata/{folder}/f1.jpg"],
    }
    record.update(extra)
    return record


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "metadata_empty"),
        (b"  \n", "metadata_empty"),
        (b"{not json", "metadata_invalid"),
        (b"[1, 2]", "metadata_invalid"),
        (b'{"pmcid": "123", "version": 1}', "metadata_invalid"),
        (b'{"pmcid": "PMC123", "version": "one"}', "metadata_invalid"),
        (b"\xff\xfe\x00garbage", "metadata_invalid"),
    ],
)
def test_bad_metadata(data, reason):
    with pytest.raises(cloud.MetadataError) as err:
        cloud.parse_metadata(data, "/root", "/root/metadata/PMC123.1.json")
    assert err.value.reason == reason


def test_good_metadata():
    meta = cloud.parse_metadata(
        json.dumps(_metadata("PMC123")).encode(), "/root", "/root/metadata/PMC123.1.json"
    )
    assert meta.ref.location == "/root/PMC123.1"
    assert meta.ref.xml_name == "PMC123.1.xml"
    assert meta.ref.media == ("f1.jpg",)


# ---- corpus runs --------------------------------------------------------------------------------


def _balanced(report: dict) -> None:
    assert report["balanced"] is True
    for name, stage in report["stages"].items():
        assert stage["balanced"], name
        terms = ("out", "duplicates") if name == "dedupe" else ("out", "dead_letter")
        extra = 0 if name in ("dedupe", "extract_figures") else stage.get("filtered", 0)
        assert stage["in"] == sum(stage.get(t, 0) for t in terms) + extra, name
        by_reason = stage.get("dead_letter_by_reason", {})
        assert sum(by_reason.values()) == stage.get("dead_letter", 0), name


def _dead_by_key(out: Path) -> dict[str, tuple[str, str, str]]:
    dead = read_dead_letters(out)
    by_key = {d["key"]: (d["stage"], d["reason"], d["detail"]) for d in dead}
    assert len(by_key) == len(dead), "one dead letter per key"
    for d in dead:
        assert d["reason"] and d["detail"] and d["source"], d
    return by_key


def _write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


# One folder per article: what it holds; FOLDER_DEAD says what each bad one must give.
FOLDER_CORPUS = {
    "PMC1001": {"PMC1001.nxml": jats("PMC1001", ("f1", "f2")), "f1.jpg": jpeg(11),
                "f2.png": png(12)},
    "PMC1002": {"PMC1002.nxml": b"<article><front>", "f1.jpg": jpeg(13)},
    "PMC1003": {"PMC1003.nxml": b"", "f1.jpg": jpeg(14)},
    "PMC1004": {"PMC1004.nxml": xxe_article("PMC1004"), "f1.jpg": jpeg(15)},
    "PMC1005": {"PMC1005.nxml": laughs_article("PMC1005"), "f1.jpg": jpeg(16)},
    "PMC1006": {"PMC1006.nxml": latin1_article("PMC1006"), "f1.jpg": jpeg(17)},
    "PMC1007": {"PMC1007.nxml": jats("PMC1007", ("f1", "f2")), "f2.jpg": jpeg(18)},
    "PMC1008": {"PMC1008.nxml": jats("PMC1008", ("f1", "f2")), "f1.jpg": corrupt_jpeg(19),
                "f2.jpg": garbage_jpeg(20)},
    "PMC1009": {"PMC1009.nxml": jats("PMC1009"), "f1.jpg": b""},
    "PMC1010": {"PMC1010.nxml": jats("PMC1010"), "f1.png": encode(noise(21, (1, 1)), "PNG")},
    "PMC1011": {"PMC1011.nxml": jats("PMC1011"), "f1.jpg": cmyk_jpeg(22)},
    "PMC1012": {"PMC1012.nxml": jats("PMC1012"), "f1.png": png16(23)},
    "PMC1013": {"PMC1013.nxml": jats("PMC1013"), "f1.png": huge_png()},
    "PMC1014": {"f1.jpg": jpeg(24)},  # images, no XML
    "PMC1015": {"PMC1015.nxml": b"<html><body/></html>", "f1.jpg": jpeg(25)},
}  # fmt: skip
FOLDER_DEAD = {
    "PMC1002": ("extract_articles", "xml_malformed"),
    "PMC1003": ("extract_articles", "xml_empty"),
    "PMC1004": ("extract_articles", "xml_forbidden_entity"),
    "PMC1005": ("extract_articles", "xml_forbidden_entity"),
    "PMC1007_F1": ("extract_figures", "image_missing"),
    "PMC1008_F1": ("extract_figures", "image_corrupt"),
    "PMC1008_F2": ("extract_figures", ("image_corrupt", "image_unreadable")),
    "PMC1009_F1": ("extract_figures", "image_empty"),
    "PMC1010_F1": ("extract_figures", "image_too_small"),
    "PMC1013_F1": ("extract_figures", "image_too_large"),
    "PMC1014": ("discover", "xml_missing"),
    "PMC1015": ("extract_articles", "xml_not_jats"),
}
FOLDER_SAMPLES = {"PMC1001_F1", "PMC1001_F2", "PMC1006_F1", "PMC1007_F2", "PMC1011_F1",
                  "PMC1012_F1"}  # fmt: skip


@pytest.fixture(scope="module")
def folder_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "corpus"
    for folder, files in FOLDER_CORPUS.items():
        _write(root / folder, files)
    out = root.parent / "out"
    report = run_extract(["--source", str(root), "--layout", "folder", "--output", str(out)])
    return report, out


def test_folder_corpus_balances(folder_corpus):
    report, out = folder_corpus
    _balanced(report)
    stages = report["stages"]
    assert stages["discover"]["in"] == len(FOLDER_CORPUS)
    assert stages["discover"]["out"] == len(FOLDER_CORPUS) - 1
    figures = read_table(out / "extract" / "figures")
    assert len(figures) == stages["dedupe"]["out"]
    assert stages["dedupe"]["duplicates"] == 0


def test_folder_corpus_dead_letters(folder_corpus):
    report, out = folder_corpus
    dead = _dead_by_key(out)
    assert set(dead) == set(FOLDER_DEAD)
    for key, (stage, reasons) in FOLDER_DEAD.items():
        reasons = (reasons,) if isinstance(reasons, str) else reasons
        assert dead[key][0] == stage, key
        assert dead[key][1] in reasons, (key, dead[key])
    counted: dict[str, int] = {}
    for stage, _ in FOLDER_DEAD.values():
        counted[stage] = counted.get(stage, 0) + 1
    for stage, n in counted.items():
        assert report["stages"][stage]["dead_letter"] == n, stage
    assert report["stages"]["extract_articles"]["dead_letter_by_reason"] == {
        "xml_malformed": 1,
        "xml_empty": 1,
        "xml_forbidden_entity": 2,
        "xml_not_jats": 1,
    }


def test_folder_corpus_samples(folder_corpus):
    _, out = folder_corpus
    figures = {f["key"]: f for f in read_table(out / "extract" / "figures")}
    assert set(figures) == FOLDER_SAMPLES
    assert figures["PMC1001_F1"]["image"] == FOLDER_CORPUS["PMC1001"]["f1.jpg"]
    assert figures["PMC1001_F1"]["image_converted"] is False
    for key, mode in (("PMC1001_F2", "RGB"), ("PMC1011_F1", "CMYK"), ("PMC1012_F1", "I;16")):
        row = figures[key]
        assert row["image_converted"] is True, key
        assert row["image_mode"] == mode, key
        decoded = Image.open(io.BytesIO(row["image"]))
        assert decoded.format == "JPEG" and decoded.mode in ("RGB", "L"), key
        assert decoded.size == (row["image_width"], row["image_height"]) == (80, 60)
    assert figures["PMC1006_F1"]["caption"] == "Figure 1 Caption of figure 1 in PMC1006."


def test_folder_corpus_articles(folder_corpus):
    report, out = folder_corpus
    articles = {a["article_accession_id"]: a for a in read_table(out / "extract" / "articles")}
    assert set(articles) == {"PMC1001", "PMC1006", "PMC1007", "PMC1008", "PMC1009", "PMC1010",
                             "PMC1011", "PMC1012", "PMC1013"}  # fmt: skip
    assert len(articles) == report["stages"]["extract_articles"]["out"]
    repaired = articles["PMC1006"]
    assert repaired["article_title"] == "Café au lait"
    assert repaired["article_parse_warnings"][0].startswith("encoding_repaired")
    assert all(not a["article_parse_warnings"] for k, a in articles.items() if k != "PMC1006")


def test_no_secret_leaks_from_xxe(folder_corpus):
    _, out = folder_corpus
    marker = _passwd_marker()
    rows = read_table(out / "extract" / "articles") + read_table(out / "extract" / "figures")
    text = json.dumps(rows, default=repr) + json.dumps(read_dead_letters(out))
    assert marker not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path


# ---- oa-package corpus --------------------------------------------------------------------------


def _package_corpus(root: Path) -> None:
    root.mkdir(parents=True)
    good = tar_gz(
        [
            ("PMC2001/PMC2001.nxml", jats("PMC2001", ("f1", "f2"))),
            ("PMC2001/f1.jpg", jpeg(31)),
            ("PMC2001/f2.png", png(32)),
            ("PMC2001/PMC2001.pdf", b"%PDF-1.4"),
        ]
    )
    unsafe = tar_gz(
        [
            ("PMC2002/PMC2002.nxml", jats("PMC2002")),
            ("PMC2002/../../../etc/cron.d/evil", b"x"),
            ("PMC2002/f1.jpg", jpeg(33)),
        ]
    )
    # XML first, then a big image: cut in half, the XML survives and the image does not.
    cut_after_xml = tar_gz(
        [("PMC2003/PMC2003.nxml", jats("PMC2003")), ("PMC2003/f1.png", png(34, (500, 500)))]
    )
    # A big image first: cut in half, the XML is never reached.
    cut_before_xml = tar_gz(
        [("PMC2004/f1.png", png(35, (500, 500))), ("PMC2004/PMC2004.nxml", jats("PMC2004"))]
    )
    files = {
        "PMC2001.tar.gz": good,
        "PMC2002.tar.gz": unsafe,
        "PMC2003.tar.gz": cut_after_xml[: len(cut_after_xml) // 2],
        "PMC2004.tar.gz": cut_before_xml[: len(cut_before_xml) // 2],
        "PMC2005.tar.gz": b"",
        "PMC2006.tar.gz": b"this is not a gzip file",
        "PMC2007.tar.gz": tar_gz([("PMC2007/readme.txt", b"no xml here")]),
        "notapackage.tar.gz": good,
    }
    for name, data in files.items():
        (root / name).write_bytes(data)


PACKAGE_DEAD = {
    "PMC2002": ("extract_articles", ("unsafe_member_path",)),
    "PMC2003_F1": ("extract_figures", ("image_missing",)),
    "PMC2004": ("extract_articles", ("archive_truncated",)),
    "PMC2005": ("extract_articles", ("archive_unreadable",)),
    "PMC2006": ("extract_articles", ("archive_unreadable",)),
    "PMC2007": ("extract_articles", ("xml_missing",)),
    "notapackage.tar.gz": ("discover", ("package_name_unrecognized",)),
}


def test_package_corpus(tmp_path):
    root = tmp_path / "packages"
    _package_corpus(root)
    out = tmp_path / "out"
    report = run_extract(["--source", str(root), "--layout", "oa-package", "--output", str(out)])
    _balanced(report)
    dead = _dead_by_key(out)
    assert set(dead) == set(PACKAGE_DEAD)
    for key, (stage, reasons) in PACKAGE_DEAD.items():
        assert dead[key][0] == stage and dead[key][1] in reasons, (key, dead[key])
    assert "truncated" in dead["PMC2003_F1"][2]
    assert "etc/cron.d" in dead["PMC2002"][2]

    articles = {a["article_accession_id"]: a for a in read_table(out / "extract" / "articles")}
    assert set(articles) == {"PMC2001", "PMC2003"}
    assert articles["PMC2003"]["article_parse_warnings"][0].startswith("archive truncated")
    figures = read_table(out / "extract" / "figures")
    assert sorted(f["key"] for f in figures) == ["PMC2001_F1", "PMC2001_F2"]
    assert len(figures) == report["stages"]["dedupe"]["out"]
    assert report["stages"]["discover"]["in"] == 8
    assert report["stages"]["extract_articles"]["in"] == 7


# ---- pmc-cloud corpus ---------------------------------------------------------------------------


def test_pmc_cloud_corpus(tmp_path):
    root = tmp_path / "bucket"
    meta = root / "metadata"
    meta.mkdir(parents=True)

    def article(pmcid: str, xml: bytes, record: dict | bytes) -> None:
        folder = f"{pmcid}.1"
        _write(root / folder, {f"{folder}.xml": xml, "f1.jpg": jpeg(int(pmcid[3:]))})
        data = record if isinstance(record, bytes) else json.dumps(record).encode()
        (meta / f"{folder}.json").write_bytes(data)

    doi = "10.9999/pmc3001"
    article("PMC3001", jats("PMC3001", doi=doi), _metadata("PMC3001", doi=doi))
    # The XML is another article than its metadata says.
    article("PMC3002", jats("PMC3999", doi="10.9999/pmc3002"), _metadata("PMC3002"))
    article("PMC3003", jats("PMC3003", doi="10.1/other"), _metadata("PMC3003"))
    article("PMC3004", jats("PMC3004"), b"{this is not json")
    article("PMC3005", jats("PMC3005"), b"")
    article("PMC3006", jats("PMC3006"), _metadata("PMC3007"))  # key names another version
    (meta / "README.txt").write_text("not a metadata file")

    out = tmp_path / "out"
    report = run_extract(["--source", str(root), "--layout", "pmc-cloud", "--output", str(out)])
    _balanced(report)
    dead = _dead_by_key(out)
    assert dead.keys() == {
        "PMC3002.1",
        "PMC3003.1",
        "PMC3004.1.json",
        "PMC3005.1.json",
        "PMC3006.1.json",
        "README.txt",
    }
    assert dead["PMC3002.1"][:2] == ("extract_articles", "metadata_xml_mismatch")
    assert "PMC3999" in dead["PMC3002.1"][2]
    assert dead["PMC3003.1"][:2] == ("extract_articles", "metadata_xml_mismatch")
    assert "10.1/other" in dead["PMC3003.1"][2]
    assert dead["PMC3004.1.json"][:2] == ("discover", "metadata_invalid")
    assert dead["PMC3005.1.json"][:2] == ("discover", "metadata_empty")
    assert dead["PMC3006.1.json"][:2] == ("discover", "metadata_key_mismatch")
    assert dead["README.txt"][:2] == ("discover", "listing_unrecognized_key")

    articles = read_table(out / "extract" / "articles")
    assert [(a["article_accession_id"], a["article_version"]) for a in articles] == [("PMC3001", 1)]
    figures = read_table(out / "extract" / "figures")
    assert [f["key"] for f in figures] == ["PMC3001_F1"]
    assert len(figures) == report["stages"]["dedupe"]["out"]
