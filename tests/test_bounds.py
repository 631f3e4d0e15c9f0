"""Bounded cost on hostile input: package, member, metadata and file sizes have bounds, each
with its own reason; images ship upright; dead letters are the same from run to run.

Hostile inputs are built small here (zeros compress a thousandfold) and the bounds are set
small on the command line, so every test runs in seconds.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import read_dead_letters, read_table, run_extract
from PIL import Image, ImageOps
from test_bad_input import _balanced, _metadata, _write, jats, jpeg, png

from transforms import storage
from transforms.images import checks
from transforms.outcomes import dead
from transforms.pmc import cloud, legacy

MB = 1 << 20


class _Zeros(io.RawIOBase):
    """`size` zero bytes, streamed: a huge member without a huge buffer."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def package(members: list[tuple[str, bytes | int]]) -> bytes:
    """A tar.gz; an int member is that many zero bytes."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = data if isinstance(data, int) else len(data)
            tar.addfile(info, _Zeros(data) if isinstance(data, int) else io.BytesIO(data))
    return out.getvalue()


def _read(data: bytes, **limits) -> legacy.Package:
    return legacy.read_package(io.BytesIO(data), **limits)


def _refused(data: bytes, **limits) -> legacy.PackageError:
    with pytest.raises(legacy.PackageError) as err:
        _read(data, **limits)
    return err.value


# ---- 1. packages: bounded bytes, only referenced members held -----------------------------------


@pytest.mark.parametrize("where", ["before_xml", "after_xml"])
def test_a_huge_member_in_a_small_package_is_refused(where):
    members = [("PMC9/PMC9.nxml", jats("PMC9")), ("PMC9/f1.jpg", jpeg(1))]
    big = ("PMC9/supplement.pdf", 8 * MB)
    data = package([big, *members] if where == "before_xml" else [*members, big])
    assert len(data) < 64 * 1024
    err = _refused(data, max_archive_bytes=2 * MB)
    assert err.reason == "archive_too_large"
    assert str(2 * MB) in err.detail
    whole = _read(data, max_archive_bytes=16 * MB)  # the same package under a larger bound
    assert whole.xml == jats("PMC9") and whole.media["f1.jpg"] == jpeg(1)


def test_many_members_add_up_to_the_bound():
    members = [(f"PMC9/f{i}.jpg", 300 * 1024) for i in range(10)]
    data = package([("PMC9/PMC9.nxml", jats("PMC9")), *members])
    assert _refused(data, max_archive_bytes=2 * MB).reason == "archive_too_large"
    assert len(_read(data, max_archive_bytes=4 * MB).media) == 10


def test_a_package_of_countless_empty_members_is_refused(monkeypatch):
    monkeypatch.setattr(legacy, "MAX_MEMBERS", 50)
    members = [(f"PMC9/f{i}.jpg", b"") for i in range(60)]
    data = package([("PMC9/PMC9.nxml", jats("PMC9")), *members])
    err = _refused(data)
    assert (err.reason, err.detail) == ("archive_too_large", "more than 50 members (limit 50)")
    monkeypatch.setattr(legacy, "MAX_MEMBERS", 100)
    assert len(_read(data).media) == 60


def test_size_flags_must_be_positive():
    from transforms.extract import ExtractArticles, ImageLimits

    with pytest.raises(ValueError, match="max_archive_bytes"):
        ExtractArticles(limits=ImageLimits(max_archive_bytes=0))


def test_image_members_are_not_held_in_memory():
    """Eight 4 MB image members: reading the package holds about one piece, not 32 MB."""
    members = [(f"PMC9/f{i}.jpg", 4 * MB) for i in range(8)]
    data = package([*members, ("PMC9/PMC9.nxml", jats("PMC9", ("f1",)))])
    tracemalloc.start()
    try:
        result = _read(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, peak
    assert sorted(result.media) == [f"f{i}.jpg" for i in range(8)]
    assert result.media["f3.jpg"] == bytes(4 * MB)  # read back only when asked for
    result.close()


def test_members_over_their_own_bound_are_counted_not_read():
    data = package(
        [("PMC9/PMC9.nxml", jats("PMC9")), ("PMC9/f1.jpg", 3 * MB), ("PMC9/f2.jpg", jpeg(2))]
    )
    result = _read(data, max_image_bytes=MB)
    assert sorted(result.media) == ["f1.jpg", "f2.jpg"]  # still resolvable by name
    assert result.media["f2.jpg"] == jpeg(2)
    with pytest.raises(legacy.MemberTooLarge) as err:
        result.media["f1.jpg"]
    assert (err.value.size, err.value.limit) == (3 * MB, MB)
    xml_refused = _refused(data, max_xml_bytes=100)
    assert xml_refused.reason == "xml_too_large"
    assert f"{len(jats('PMC9'))} bytes > limit 100" in xml_refused.detail


def test_bulk_members_are_bounded():
    data = package(
        [
            ("PMC001xxxxxx/PMC1.xml", jats("PMC1")),
            ("PMC001xxxxxx/PMC2.xml", 2 * MB),
            ("PMC001xxxxxx/PMC3.xml", jats("PMC3")),
        ]
    )
    items = list(legacy.iter_bulk_xml(io.BytesIO(data), max_xml_bytes=MB))
    assert [(name, xml is not None) for name, xml, _ in items] == [
        ("PMC001xxxxxx/PMC1.xml", True),
        ("PMC001xxxxxx/PMC2.xml", False),
        ("PMC001xxxxxx/PMC3.xml", True),
    ]
    assert items[1][2].startswith("xml_too_large: ")
    assert f"{2 * MB} bytes > limit {MB}" in items[1][2]


# ---- 2. metadata fields: bounded, typed, never cut ----------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("license_code", "CC BY" + "Y" * 5 * MB),
        ("title", "T" * 100_000),
        ("citation", "C" * 100_000),
        ("doi", "10.1/" + "d" * 5000),
        ("pmid", "1" * 5000),
        ("xml_url", "s3://pmc-oa-opendata/PMC123.1/" + "x" * 10_000),
        ("media_urls", ["s3://pmc-oa-opendata/PMC123.1/" + "m" * 10_000]),
        ("media_urls", ["s3://pmc-oa-opendata/PMC123.1/f.jpg"] * 20_000),
        ("license_code", {"code": "CC BY"}),
        ("title", ["A", "title"]),
        ("pmid", True),
        ("doi", 10.1),
        ("media_urls", "s3://pmc-oa-opendata/PMC123.1/f1.jpg"),
        ("media_urls", [None]),
        ("is_retracted", "false"),
        ("is_pmc_openaccess", 0),
        ("version", 1.5),
        ("version", True),
        ("version", "9" * 5000),
    ],
)
def test_metadata_fields_are_bounded_and_typed(field, value):
    record = _metadata("PMC123")
    record[field] = value
    data = json.dumps(record).encode()
    with pytest.raises(cloud.MetadataError) as err:
        cloud.parse_metadata(data, "/root", "/root/metadata/PMC123.1.json")
    assert err.value.reason == "metadata_invalid"
    assert f"field {field}" in err.value.detail
    assert len(err.value.detail) < 200


def test_metadata_a_number_of_thousands_of_digits():
    data = b'{"pmcid": "PMC123", "version": 1, "pmid": ' + b"7" * 5000 + b"}"
    with pytest.raises(cloud.MetadataError) as err:
        cloud.parse_metadata(data, "/root", "/root/metadata/PMC123.1.json")
    assert err.value.reason == "metadata_invalid"


def test_metadata_numeric_ids_and_nulls_are_accepted():
    record = _metadata("PMC123", pmid=12345678, mid=None, doi=None, is_manuscript=None)
    meta = cloud.parse_metadata(json.dumps(record).encode(), "/r", "/r/metadata/PMC123.1.json")
    assert (meta.ref.pmid, meta.ref.doi, meta.ref.license_code) == ("12345678", "", "CC BY")


_HEADER = "File,Article Citation,Accession ID,Last Updated (YYYY-MM-DD HH:MM:SS),PMID,License\n"


def _file_list_row(pmcid: str, citation: str = "J Test. 2024", license_code: str = "CC BY"):
    path = f"oa_package/00/00/{pmcid}.tar.gz"
    return f'{path},"{citation}",{pmcid},2024-01-01 00:00:00,,{license_code}\n'


def test_file_list_rows_are_bounded():
    text = (
        _HEADER
        + _file_list_row("PMC1")
        + _file_list_row("PMC2", citation="c" * 10_000)
        + _file_list_row("PMC3", license_code="CC BY" * 1000)
        + _file_list_row("PMC4", citation="c" * 300_000)  # past the csv module's own bound
        + _file_list_row("PMC5")
    )
    rows = {r.accession: r for r in legacy.parse_file_list(text.encode())}
    assert set(rows) == {"PMC1", "PMC2", "PMC3", "PMC4", "PMC5"}
    assert rows["PMC1"].invalid == rows["PMC5"].invalid == ""
    assert rows["PMC5"].license_code == "CC BY"
    assert "field citation: 10000 characters > limit" in rows["PMC2"].invalid
    assert "field license_code: 5000 characters" in rows["PMC3"].invalid
    assert "field larger than field limit" in rows["PMC4"].invalid
    assert all(len(r.citation) <= legacy.MAX_CITATION_CHARS for r in rows.values())


# ---- 3. size limits give their own reasons -------------------------------------------------------


def test_read_bytes_over_the_bound_says_size_and_limit(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(bytes(5000))
    with pytest.raises(storage.TooLarge) as err:
        storage.read_bytes(str(path), max_bytes=4096)
    assert str(err.value) == "5000 bytes > limit 4096"
    assert storage.read_bytes(str(path), max_bytes=5000) == bytes(5000)


def test_read_bytes_over_the_bound_on_s3():
    from conftest import moto_s3

    with moto_s3() as (endpoint, owner):
        owner.create_bucket(Bucket="bounds", ACL="public-read")
        owner.put_object(Bucket="bounds", Key="big.xml", Body=bytes(5000), ACL="public-read")
        config = storage.S3Config(endpoint_url=endpoint, anonymous=True)
        with pytest.raises(storage.TooLarge) as err:
            storage.read_bytes("s3://bounds/big.xml", config, max_bytes=4096)
        assert str(err.value) == "5000 bytes > limit 4096"
        assert storage.read_bytes("s3://bounds/big.xml", config, max_bytes=5000) == bytes(5000)


# ---- 4. images ship upright ------------------------------------------------------------------


def _scene(variant: int = 0, size=(96, 64)) -> Image.Image:
    """A picture with no symmetry: a gradient, a dark block, a bright stripe on the right."""
    w, h = size
    x = np.linspace(0, 200, w)[None, :, None]
    y = np.linspace(0, 120, h)[:, None, None]
    pixels = np.broadcast_to(x * 0.5 + y, (h, w, 3)).copy()
    if variant:
        pixels[-h // 2 :, w // 3 : 2 * w // 3] = (10, 20, 30)
    else:
        pixels[: h // 4, : w // 3] = (10, 20, 30)
    pixels[:, -w // 8 :] = (250, 240, 200)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _with_orientation(fmt: str, orientation: int, mode: str = "RGB", variant: int = 0) -> bytes:
    image = _scene(variant).convert(mode)
    out = io.BytesIO()
    if fmt == "TIFF":
        image.save(out, "TIFF", tiffinfo={0x0112: orientation})
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(out, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def _upright(data: bytes) -> Image.Image:
    """How an EXIF-aware viewer shows the stored image (Pillow's own transpose)."""
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_images_ship_upright(fmt, orientation):
    data = _with_orientation(fmt, orientation)
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == orientation
    checked = checks.check_image(data)
    expected = _upright(data)
    shipped = Image.open(io.BytesIO(checked.data))
    assert shipped.format == "JPEG"
    assert shipped.size == expected.size == (checked.width, checked.height)
    assert shipped.getexif().get(0x0112) is None  # nothing left for a reader to apply again
    assert checked.converted is True
    assert checked.phash == checks.phash(expected)
    diff = np.abs(np.asarray(shipped.convert("RGB"), float) - np.asarray(expected, float))
    assert diff.mean() < 6, diff.mean()


def test_a_cmyk_jpeg_ships_upright():
    data = _with_orientation("JPEG", 6, mode="CMYK")
    checked = checks.check_image(data)
    assert (checked.width, checked.height) == (64, 96)
    assert Image.open(io.BytesIO(checked.data)).size == (64, 96)
    assert checked.source_mode == "CMYK"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_orientation_1_and_none_change_nothing(fmt):
    plain = jpeg(5) if fmt == "JPEG" else png(5)
    tagged = _with_orientation(fmt, 1)
    for data in (plain, tagged):
        checked = checks.check_image(data)
        assert (checked.width, checked.height) == Image.open(io.BytesIO(data)).size
        assert checked.warnings == []
        if fmt == "JPEG":
            assert checked.data == data and checked.converted is False


def _with_app1(payload: bytes) -> bytes:
    data = jpeg(6)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def _ifd(tag_type: int, count: int, value: bytes) -> bytes:
    entry = struct.pack("<HHI", 0x0112, tag_type, count) + value.ljust(4, b"\0")
    return b"II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)


@pytest.mark.parametrize(
    ("payload", "warning"),
    [
        (b"Exif\x00\x00" + b"\xde\xad\xbe\xef" * 10, "exif_unreadable"),
        (b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff", "exif_unreadable"),
        (b"Exif\x00\x00" + _ifd(3, 1, struct.pack("<H", 9)), "exif_orientation_invalid"),
        (b"Exif\x00\x00" + _ifd(3, 1, struct.pack("<H", 600)), "exif_orientation_invalid"),
        (b"Exif\x00\x00" + _ifd(2, 2, b"6\x00"), "exif_orientation_invalid"),
    ],
)
def test_a_broken_exif_block_is_taken_as_stored_and_said(payload, warning):
    data = _with_app1(payload)
    checked = checks.check_image(data)
    assert checked.data == data and checked.converted is False
    assert (checked.width, checked.height) == (80, 60)
    assert [w.split(":")[0] for w in checked.warnings] == [warning]


# ---- 5. dead letters are stable -----------------------------------------------------------------


def test_dead_letter_details_carry_no_memory_address():
    with pytest.raises(checks.ImageRejected) as err:
        checks.check_image(b"GIF87a but not really an image at all")
    assert "0x" not in err.value.detail
    letter = dead("s", "k", "r", "cannot identify image file <_io.BytesIO object at 0x7f3a2c1d>")
    assert letter.value.detail == "cannot identify image file <_io.BytesIO object>"


# ---- the pipeline: each bound gives its reason, the report balances, runs repeat -----------------

_LIMITS = ["--max_xml_bytes", "20000", "--max_image_bytes", "100000",
           "--max_archive_bytes", str(2 * MB)]  # fmt: skip


def _folder_corpus(root: Path) -> None:
    _write(root / "PMC4001", {"PMC4001.nxml": jats("PMC4001", ("f1", "f2", "f3")),
                              "f1.jpg": jpeg(41), "f2.jpg": bytes(150_000),
                              "f3.jpg": b"not an image, named like one"})  # fmt: skip
    _write(root / "PMC4002", {"PMC4002.nxml": jats("PMC4002", title="x" * 30_000),
                              "f1.jpg": jpeg(42)})  # fmt: skip
    _write(root / "PMC4003", {"PMC4003.nxml": jats("PMC4003", ("f1", "f2")),
                              "f1.jpg": _with_orientation("JPEG", 6),
                              "f2.jpg": _with_orientation("JPEG", 6, "CMYK", 1)})  # fmt: skip


def _run(source: Path, out: Path, layout: str, *extra: str) -> dict:
    return run_extract(
        ["--source", str(source), "--layout", layout, "--output", str(out), *_LIMITS, *extra]
    )


@pytest.fixture(scope="module")
def folder_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounds")
    _folder_corpus(root / "corpus")
    first = _run(root / "corpus", root / "out1", "folder")
    second = _run(root / "corpus", root / "out2", "folder")
    return first, root / "out1", second, root / "out2"


def test_folder_limits_give_their_reasons(folder_runs):
    report, out, _, _ = folder_runs
    _balanced(report)
    dead = {d["key"]: d for d in read_dead_letters(out)}
    assert dead["PMC4001_F2"]["reason"] == "image_too_large"
    assert "f2.jpg: 150000 bytes > limit 100000" in dead["PMC4001_F2"]["detail"]
    assert dead["PMC4002"]["reason"] == "xml_too_large"
    assert "> limit 20000" in dead["PMC4002"]["detail"]
    assert dead["PMC4001_F3"]["reason"] == "image_unreadable"


def test_folder_images_ship_upright(folder_runs):
    _, out, _, _ = folder_runs
    figures = {f["key"]: f for f in read_table(out / "extract" / "figures")}
    for key in ("PMC4003_F1", "PMC4003_F2"):
        row = figures[key]
        image = Image.open(io.BytesIO(row["image"]))
        assert image.size == (row["image_width"], row["image_height"]) == (64, 96), key
        assert row["image_size"] == [64, 96] and row["image_converted"] is True, key
    assert figures["PMC4001_F1"]["image"] == jpeg(41)


def test_the_same_bad_input_gives_the_same_dead_letters(folder_runs):
    _, out1, _, out2 = folder_runs
    first, second = read_dead_letters(out1), read_dead_letters(out2)
    assert len(first) == 3
    key = lambda d: (d["stage"], d["key"])  # noqa: E731
    assert sorted(first, key=key) == sorted(second, key=key)
    assert not any("0x" in d["detail"] for d in first)


def test_package_limits_give_their_reasons(tmp_path):
    root = tmp_path / "packages"
    root.mkdir()
    files = {
        # one 8 MB member of zeros in a package of a few kB
        "PMC5001.tar.gz": package([("PMC5001/PMC5001.nxml", jats("PMC5001")),
                                   ("PMC5001/f1.jpg", jpeg(51)), ("PMC5001/movie.avi", 8 * MB)]),
        "PMC5002.tar.gz": package([("PMC5002/f1.jpg", 150_000), ("PMC5002/f2.jpg", jpeg(52)),
                                   ("PMC5002/unused.jpg", jpeg(53)),
                                   ("PMC5002/PMC5002.nxml", jats("PMC5002", ("f1", "f2")))]),
        "PMC5003.tar.gz": package([("PMC5003/PMC5003.nxml", jats("PMC5003", title="x" * 30_000)),
                                   ("PMC5003/f1.jpg", jpeg(54))]),
        "PMC5004.tar.gz": package([("PMC5004/PMC5004.nxml", jats("PMC5004")),
                                   ("PMC5004/f1.jpg", jpeg(55))]),
    }  # fmt: skip
    for name, data in files.items():
        (root / name).write_bytes(data)
    file_list = tmp_path / "oa_file_list.csv"
    file_list.write_text(
        _HEADER
        + "".join(_file_list_row(f"PMC500{i}") for i in (1, 2, 3))
        + _file_list_row("PMC5004", license_code="CC BY" * 1000)
    )
    out = tmp_path / "out"
    report = _run(root, out, "oa-package", "--file_list", str(file_list))
    _balanced(report)
    dead = {d["key"]: d for d in read_dead_letters(out)}
    assert {k: d["reason"] for k, d in dead.items()} == {
        "PMC5001": "archive_too_large",
        "PMC5002_F1": "image_too_large",
        "PMC5003": "xml_too_large",
        "PMC5004": "metadata_invalid",
    }
    assert "f1.jpg: 150000 bytes > limit 100000" in dead["PMC5002_F1"]["detail"]
    assert "field license_code" in dead["PMC5004"]["detail"]
    assert dead["PMC5004"]["stage"] == "discover"
    figures = read_table(out / "extract" / "figures")
    assert [(f["key"], f["image"]) for f in figures] == [("PMC5002_F2", jpeg(52))]


def test_metadata_bounds_through_the_pipeline(tmp_path):
    root = tmp_path / "bucket"
    (root / "metadata").mkdir(parents=True)
    for pmcid, extra in (("PMC6001", {}), ("PMC6002", {"license_code": "CC BY" * 100_000}),
                         ("PMC6003", {"is_retracted": "no"})):  # fmt: skip
        folder = f"{pmcid}.1"
        _write(root / folder, {f"{folder}.xml": jats(pmcid), "f1.jpg": jpeg(int(pmcid[3:]))})
        record = _metadata(pmcid, doi="", **extra)
        (root / "metadata" / f"{folder}.json").write_text(json.dumps(record))
    out = tmp_path / "out"
    report = _run(root, out, "pmc-cloud")
    _balanced(report)
    dead = {d["key"]: (d["stage"], d["reason"], d["detail"]) for d in read_dead_letters(out)}
    assert dead.keys() == {"PMC6002.1.json", "PMC6003.1.json"}
    assert dead["PMC6002.1.json"][:2] == ("discover", "metadata_invalid")
    assert "field license_code: 500000 characters > limit" in dead["PMC6002.1.json"][2]
    assert "field is_retracted: str" in dead["PMC6003.1.json"][2]
    articles = read_table(out / "extract" / "articles")
    assert [a["article_license"] for a in articles] == ["CC BY"]


def test_bulk_file_list_bounds_through_the_pipeline(tmp_path):
    bulk = tmp_path / "oa_comm_xml.incr.2024-01-01.tar.gz"
    bulk.write_bytes(
        package(
            [
                ("PMC000xxxxxx/PMC7001.xml", jats("PMC7001")),
                ("PMC000xxxxxx/PMC7002.xml", jats("PMC7002")),
            ]
        )  # fmt: skip
    )
    (tmp_path / "oa_comm_xml.incr.2024-01-01.filelist.csv").write_text(
        "Article File,Article Citation,AccessionID,LastUpdated (YYYY-MM-DD HH:MM:SS),PMID,"
        "License,Retracted\n"
        "PMC000xxxxxx/PMC7001.xml,J Test. 2024,PMC7001,2024-01-01 00:00:00,,CC BY,no\n"
        f"PMC000xxxxxx/PMC7002.xml,{'c' * 9000},PMC7002,2024-01-01 00:00:00,,CC BY,no\n"
    )
    out = tmp_path / "out"
    report = _run(bulk, out, "oa-bulk")
    _balanced(report)
    dead = {d["key"]: d for d in read_dead_letters(out) if d["stage"] == "discover"}
    assert dead.keys() == {"PMC7002"}
    assert dead["PMC7002"]["reason"] == "metadata_invalid"
    assert "field citation: 9000 characters" in dead["PMC7002"]["detail"]
    articles = read_table(out / "extract" / "articles")
    assert [a["article_accession_id"] for a in articles] == ["PMC7001"]
