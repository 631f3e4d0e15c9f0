"""The shard stage and subset: the dataset reads back whole with real readers.

One synthetic corpus is extracted and sharded once (module fixture); the tests read it with
webdataset, Hugging Face `datasets`, pyarrow's dataset API and plain tarfile, rerun it on
other runners, resume it, break its input, write it to a GCS emulator and subset it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import webdataset
from conftest import PORTABLE_RUNNER, gcs_emulator, read_dead_letters, read_table, run_extract
from PIL import Image

from pipelines import shard as shard_pipeline
from pipelines import subset as subset_pipeline
from transforms import storage
from transforms.pmc.sample_corpus import generate_corpus
from transforms.records import FIGURE_SCHEMA
from transforms.shard import dataset_card
from transforms.shard.samples import SampleRejected, sample_json, sample_jsons, sanitize
from transforms.shard.webdataset_tar import build_shard

PER_SHARD = "7"
SIDE_FIELDS = ("txt", "fixes")  # what a sample's JSON holds beyond its figure row


# ---- helpers ------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path, *parts: str) -> dict[str, Path]:
    """{relative path: path} of every file under the given parts of a dataset."""
    files = {}
    for part in parts:
        base = root / part
        found = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        files.update({p.relative_to(root).as_posix(): p for p in found})
    return files


def digests(root: Path, *parts: str) -> dict[str, str]:
    return {name: sha256(path) for name, path in tree(root, *parts).items()}


def manifest_of(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def tar_paths(root: Path, group: str | None = None) -> list[str]:
    manifest = manifest_of(root)
    return [str(root / s["path"]) for s in manifest["shards"] if group in (None, s["group"])]


def read_samples(root: Path, group: str | None = None) -> dict[str, dict]:
    """{key: {"jpg": bytes, "json": dict, "txt": str}} of a dataset, read by webdataset."""
    samples = {}
    for sample in webdataset.WebDataset(tar_paths(root, group), shardshuffle=False):
        key = sample["__key__"]
        assert key not in samples, f"sample {key} appears twice"
        assert {"jpg", "json", "txt"} <= set(sample), sorted(sample)
        samples[key] = {
            "jpg": sample["jpg"],
            "json": json.loads(sample["json"]),
            "txt": sample["txt"].decode("utf-8"),
        }
    return samples


def run_shard(source, output: Path, *flags: str) -> dict:
    return shard_pipeline.run(
        ["--input", str(source), "--output", str(output), "--samples_per_shard", PER_SHARD, *flags]
    )


def assert_balanced(report: dict, stage: str = "shard") -> dict:
    assert report["balanced"], report
    counts = report["stages"][stage]
    assert counts["balanced"], report
    return counts


def row_fields(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "image"}


def input_order(files: list[Path]) -> dict[str, list[str]]:
    """{group: keys} in (file, row) order: the order a group's samples run in its shards."""
    order: dict[str, list[str]] = {}
    for path in files:
        table = pq.read_table(path, columns=["key", "article_license_group"])
        for key, group in zip(*(table.column(i).to_pylist() for i in range(2)), strict=True):
            order.setdefault(group, []).append(key)
    return order


def shard_order(root: Path, group: str) -> list[str]:
    """Keys of a group's samples as its tars hold them; a sample's members are consecutive."""
    order = []
    for path in tar_paths(root, group):
        with tarfile.open(path) as tar:
            names = tar.getnames()
        keys = [n.rsplit(".", 1)[0] for n in names][::3]
        assert names == [f"{k}.{ext}" for k in keys for ext in ("jpg", "json", "txt")]
        order += keys
    return order


# ---- the dataset, built once --------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shard")
    corpus, extract, dataset = root / "corpus", root / "extract", root / "dataset"
    generate_corpus(str(corpus), 16, seed=0, image_side=160)
    extract_report = run_extract(["--source", str(corpus), "--output", str(extract)])
    assert extract_report["balanced"], extract_report
    figures = read_table(extract / "extract" / "figures")
    assert len(figures) == extract_report["stages"]["dedupe"]["out"] > 20
    report = run_shard(extract, dataset)
    # An article's text is stored once, in extract/articles; each sample's JSON carries it.
    articles = {
        (a["article_accession_id"], a["article_version"]): a["article_text"]
        for a in read_table(extract / "extract" / "articles")
    }
    texts = {
        row["key"]: articles[(row["article_accession_id"], row["article_version"])]
        for row in figures
    }
    return {
        "root": root,
        "extract": extract,
        "dataset": dataset,
        "figures": {row["key"]: row for row in figures},
        "texts": texts,
        "report": report,
    }


def test_report_and_manifest(built):
    dataset, figures = built["dataset"], built["figures"]
    counts = assert_balanced(built["report"])
    assert built["report"]["mode"] == "fresh"
    assert counts["in"] == counts["out"] == len(figures)
    assert counts["dead_letter"] == 0 and read_dead_letters(dataset) == []
    manifest = manifest_of(dataset)
    assert manifest["schema_version"] == 1 and manifest["source"] == str(built["extract"])
    assert manifest["parameters"]["samples_per_shard"] == int(PER_SHARD)
    assert manifest["totals"]["samples"] == len(figures)
    assert counts["shards_written"] == manifest["totals"]["shards"] == len(manifest["shards"])
    expected_groups = Counter(row["article_license_group"] for row in figures.values())
    assert {g: v["samples"] for g, v in manifest["groups"].items()} == dict(expected_groups)
    for group, info in manifest["groups"].items():
        shards = [s for s in manifest["shards"] if s["group"] == group]
        # Every shard is full but the last of its group; indexes count from 0.
        assert (
            [s["index"] for s in shards]
            == list(range(len(shards)))
            == list(range(-(-info["samples"] // int(PER_SHARD))))
        )
        assert all(s["samples"] == int(PER_SHARD) for s in shards[:-1])
        assert sum(s["bytes"] for s in shards) == info["bytes"]
    for entry in manifest["shards"]:
        tar, parquet = dataset / entry["path"], dataset / entry["parquet_path"]
        assert entry["path"] == f"webdataset/{entry['group']}/{entry['index']:06d}.tar"
        assert entry["parquet_path"] == f"parquet/{entry['group']}/{entry['index']:06d}.parquet"
        assert tar.stat().st_size == entry["bytes"]
        assert sha256(tar) == entry["sha256"] and sha256(parquet) == entry["parquet_sha256"]
    # Nothing but the manifest's shards, and nothing left aside.
    listed = {s["path"] for s in manifest["shards"]} | {
        s["parquet_path"] for s in manifest["shards"]
    }
    assert set(tree(dataset, "webdataset", "parquet")) == listed
    assert not [p for p in dataset.rglob("*") if "inprogress" in p.name or p.name == "_work"]
    assert json.loads((dataset / "_run.json").read_text())["parameters"] == manifest["parameters"]


# ---- 1. webdataset ------------------------------------------------------------------------------


def test_webdataset_reads_every_sample(built):
    dataset, figures = built["dataset"], built["figures"]
    assert sum(bool(text) for text in built["texts"].values()) > len(figures) / 2
    samples = read_samples(dataset)
    assert len(samples) == manifest_of(dataset)["totals"]["samples"] == len(figures)
    assert set(samples) == set(figures)
    for key, sample in samples.items():
        row = figures[key]
        assert sample["jpg"] == row["image"]
        assert sample["txt"] == row["caption"]
        meta = sample["json"]
        assert meta["txt"] == row["caption"] and meta["fixes"] == []
        # The article's text, stored once in extract/articles, joined into every sample.
        assert meta["article_text"] == built["texts"][key]
        assert {k: v for k, v in meta.items() if k not in SIDE_FIELDS} == {
            **row_fields(row),
            "article_text": built["texts"][key],
        }
    # A group's samples run in input order: the extract's files sorted, rows as they lie.
    expected = input_order(sorted((built["extract"] / "extract" / "figures").glob("*.parquet")))
    assert set(expected) == set(manifest_of(dataset)["groups"])
    for group, keys in expected.items():
        assert shard_order(dataset, group) == keys


# ---- 2. Hugging Face datasets -------------------------------------------------------------------


def test_hugging_face_loads_shards_and_parquet(built, tmp_path):
    from datasets import load_dataset

    dataset, figures = built["dataset"], built["figures"]
    manifest = manifest_of(dataset)
    for group, info in manifest["groups"].items():
        loaded = load_dataset(
            "webdataset",
            data_files={"train": tar_paths(dataset, group)},
            split="train",
            cache_dir=str(tmp_path / "hf"),
        )
        assert len(loaded) == info["samples"]
        keys = loaded["__key__"]
        assert len(set(keys)) == len(keys)
        assert {figures[k]["article_license_group"] for k in keys} == {group}
        first = loaded[0]
        assert first["txt"] == figures[first["__key__"]]["caption"]
        assert first["json"]["key"] == first["__key__"]
        assert first["jpg"].size == tuple(figures[first["__key__"]]["image_size"])

        parquet = load_dataset(
            "parquet",
            data_files={"train": sorted(str(p) for p in (dataset / "parquet" / group).glob("*"))},
            split="train",
            cache_dir=str(tmp_path / "hf"),
        )
        assert len(parquet) == info["samples"]
        assert sorted(parquet["key"]) == sorted(keys)
        assert "image" not in parquet.column_names
        assert {"shard", "sample_offset", "tar_offset", "tar_size", "fixes"} <= set(
            parquet.column_names
        )

    # The card's configs and features: load_dataset on the folder itself, one config a group.
    for group, info in manifest["groups"].items():
        loaded = load_dataset(str(dataset), group, split="train", cache_dir=str(tmp_path / "hf"))
        assert len(loaded) == info["samples"]
        assert loaded.features["json"]["fixes"].feature.dtype == "string"


def test_hugging_face_card_types_fields_empty_in_first_samples(built, tmp_path):
    """A field null or [] in a group's first five samples and filled later still loads.

    Hugging Face infers a webdataset's JSON types from five samples; without the card's
    features such a field got type null and the load failed ("Couldn't cast ... to null").
    """
    from datasets import load_dataset

    rows = [sanitize(row) for row in list(built["figures"].values())[:8]]
    assert all(row["fixes"] == [] and row["image_cluster_id"] is None for row in rows)
    rows[6]["fixes"] = ["key_rewritten_from:a.b"]
    rows[6]["image_cluster_id"] = 3
    data, _ = build_shard(
        [(r["key"], r["image"], sample_json(r), r["caption"].encode()) for r in rows]
    )
    folder = tmp_path / "ds"
    (folder / "webdataset" / "commercial").mkdir(parents=True)
    (folder / "webdataset" / "commercial" / "000000.tar").write_bytes(data)
    manifest = {"totals": {"samples": 8, "shards": 1, "bytes": len(data)}, "source": "test"}
    manifest["groups"] = {"commercial": {"shards": 1, "samples": 8, "bytes": len(data)}}
    card = dataset_card.build_card(manifest, [(("commercial", "J", "2024"), 8)])
    (folder / "README.md").write_bytes(card["README.md"])
    loaded = load_dataset(str(folder), "commercial", split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == 8
    assert loaded[6]["json"]["fixes"] == ["key_rewritten_from:a.b"]
    assert loaded[6]["json"]["image_cluster_id"] == 3
    assert loaded[0]["json"]["fixes"] == [] and loaded[0]["json"]["image_cluster_id"] is None


# ---- 3. pyarrow dataset API and tar offsets -----------------------------------------------------


def test_pyarrow_dataset_filters_and_offsets(built):
    dataset, figures = built["dataset"], built["figures"]
    table = pads.dataset(dataset / "parquet", format="parquet")
    assert table.count_rows() == len(figures)
    years = sorted({row["article_year"] for row in figures.values()})
    year = years[len(years) // 2]
    wanted = (pc.field("article_license_group") == "commercial") & (
        pc.field("article_year") >= year
    )
    selected = table.to_table(
        filter=wanted, columns=["key", "shard", "tar_offset", "tar_size", "sample_offset"]
    ).to_pylist()
    expected = {
        k
        for k, row in figures.items()
        if row["article_license_group"] == "commercial" and row["article_year"] >= year
    }
    assert expected and len(expected) < len(figures)
    assert {row["key"] for row in selected} == expected

    # Every row's placement leads straight to its sample in the tar.
    for row in table.to_table().to_pylist():
        path = dataset / "webdataset" / row["shard"]
        with path.open("rb") as handle:
            handle.seek(row["tar_offset"])
            span = io.BytesIO(handle.read(row["tar_size"]))
        with tarfile.open(fileobj=span, mode="r|") as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar]
        key = row["key"]
        assert [name for name, _ in members] == [f"{key}.jpg", f"{key}.json", f"{key}.txt"]
        assert members[0][1] == figures[key]["image"]
        assert members[2][1].decode() == figures[key]["caption"]
        with tarfile.open(path) as tar:
            assert tar.getnames()[3 * row["sample_offset"]] == f"{key}.jpg"
    # The Parquet holds every figure field but the image, unchanged.
    for row in table.to_table().to_pylist():
        source = row_fields(figures[row["key"]])
        assert {k: row[k] for k in source} == source
        assert row["fixes"] == []


# ---- 4. determinism across runners --------------------------------------------------------------


def test_same_bytes_on_other_runners(built, tmp_path):
    dataset = built["dataset"]
    reference = digests(dataset, "webdataset", "parquet", "manifest.json")
    multi = tmp_path / "multi"
    report = run_shard(
        built["extract"],
        multi,
        "--direct_running_mode",
        "multi_processing",
        "--direct_num_workers",
        "2",
    )
    assert_balanced(report)
    assert digests(multi, "webdataset", "parquet", "manifest.json") == reference
    assert (multi / "manifest.json").read_bytes() == (dataset / "manifest.json").read_bytes()

    portable = tmp_path / "portable"
    report = run_shard(built["extract"], portable, *PORTABLE_RUNNER)
    assert_balanced(report)
    assert digests(portable, "webdataset", "parquet", "manifest.json") == reference


def split_figures(built, folder: Path, bounds=(5, 16, 17, 33)) -> list[pa.Table]:
    """The extract's figure rows cut into files part-0, part-1, ... (named in their order)
    at the given row numbers, each with its articles file of the same name in the sibling
    `articles` folder (where the shard stage reads their text); the tables written."""
    figures = sorted((built["extract"] / "extract" / "figures").glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(path) for path in figures)
    articles = pq.read_table(built["extract"] / "extract" / "articles")
    folder.mkdir()
    (folder.parent / "articles").mkdir()
    cuts = [0, *bounds, table.num_rows]
    parts = [table.slice(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False)]
    for i, part in enumerate(parts):
        pq.write_table(part, folder / f"part-{i}.parquet")
        pq.write_table(articles, folder.parent / "articles" / f"part-{i}.parquet")
    return parts


def test_shards_spanning_input_files_are_joined_in_order(built, tmp_path):
    """The same rows split over several files (named in their order) give the same bytes:
    shards that straddle files are joined from pieces, on one worker or two."""
    split = tmp_path / "split"
    # Sizes that are no multiple of 7: most shards of each group straddle two files.
    split_figures(built, split)
    one, two = tmp_path / "one", tmp_path / "two"
    counts = assert_balanced(run_shard(split / "*.parquet", one))
    assert counts["shards_joined_from_pieces"] >= 4
    assert "shards_joined_from_pieces" not in assert_balanced(built["report"])
    assert_balanced(
        run_shard(
            split / "*.parquet",
            two,
            "--direct_running_mode",
            "multi_processing",
            "--direct_num_workers",
            "2",
        )
    )
    shards = ("webdataset", "parquet")
    assert digests(one, *shards) == digests(two, *shards) == digests(built["dataset"], *shards)
    expected = input_order(sorted(split.glob("*.parquet")))
    for group, keys in expected.items():
        assert shard_order(one, group) == keys
        counts = [e["samples"] for e in manifest_of(one)["shards"] if e["group"] == group]
        assert all(n == 7 for n in counts[:-1]) and 0 < counts[-1] <= 7
    assert not (one / "_work").exists()


def test_a_read_that_fails_once_is_retried(built, tmp_path, monkeypatch):
    """A storage blip in the middle of a file (after some of its shards and pieces were
    written) costs a retry of that file, not its samples: the same bytes as a clean run."""
    from transforms.shard import sources as shard_sources
    from transforms.shard import write_shards as shard_module
    from transforms.shard.sources import ParquetSource

    split = tmp_path / "split"
    split_figures(built, split)
    marker = tmp_path / "failed-once"
    read = ParquetSource.full

    def flaky(self, unit):
        for n, table in enumerate(read(self, unit)):
            if unit.endswith("part-4.parquet") and n == 3 and not marker.exists():
                marker.touch()
                raise OSError("Connection reset by peer")
            yield table

    monkeypatch.setattr(ParquetSource, "full", flaky)
    monkeypatch.setattr(shard_module, "RETRY_SECONDS", 0)
    monkeypatch.setattr(shard_sources, "BATCH_ROWS", 4)  # several batches per file
    output = tmp_path / "dataset"
    counts = assert_balanced(run_shard(split / "*.parquet", output))
    assert marker.exists() and counts["dead_letter"] == 0
    shards = ("webdataset", "parquet")
    assert digests(output, *shards) == digests(built["dataset"], *shards)


def test_group_column_as_bytes_is_placed_like_text(built, tmp_path):
    """One file's license group column is binary (as some writers store strings): both reads
    place its rows alike, so the shards are those of the same rows as text."""
    folder = tmp_path / "figures"
    parts = split_figures(built, folder, bounds=(20,))
    second = parts[1]
    column = second.schema.get_field_index("article_license_group")
    as_bytes = second.column(column).cast(pa.binary())
    second = second.set_column(column, pa.field("article_license_group", pa.binary()), as_bytes)
    pq.write_table(second, folder / "part-1.parquet")
    output = tmp_path / "dataset"
    counts = assert_balanced(run_shard(folder / "*.parquet", output))
    assert counts["out"] == len(built["figures"])
    shards = ("webdataset", "parquet")
    assert digests(output, *shards) == digests(built["dataset"], *shards)


def test_unreadable_input_files_are_dead_letters(built, tmp_path, monkeypatch):
    """A figure file that cannot be read at all, and one whose image pages break only when
    the shards are written: both become dead letters, the rest is sharded, counts add up."""
    from transforms.shard import write_shards as shard_module

    monkeypatch.setattr(shard_module, "RETRY_SECONDS", 0)
    folder = tmp_path / "figures"
    parts = split_figures(built, folder, bounds=(16, 33))
    truncated = folder / "part-1.parquet"
    truncated.write_bytes(truncated.read_bytes()[:3000])
    # part-2: garbage over the image column's first page header. The light read never
    # touches that column; the full read fails on it.
    broken = folder / "part-2.parquet"
    metadata = pq.ParquetFile(broken).metadata
    image = metadata.schema.to_arrow_schema().get_field_index("image")
    offset = metadata.row_group(0).column(image).data_page_offset
    data = bytearray(broken.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    broken.write_bytes(bytes(data))
    assert pq.read_table(broken, columns=["key", "caption"]).num_rows == parts[2].num_rows

    output = tmp_path / "dataset"
    counts = assert_balanced(run_shard(folder / "*.parquet", output))
    dead = read_dead_letters(output)
    assert counts["in"] == parts[0].num_rows + 1 + parts[2].num_rows
    assert Counter(d["reason"] for d in dead) == {"unit_unreadable": 1 + parts[2].num_rows}
    whole_file = [d for d in dead if d["key"] == str(truncated)]
    assert len(whole_file) == 1 and whole_file[0]["detail"]
    lost = {d["key"] for d in dead if d["key"] != str(truncated)}
    assert lost == set(parts[2].column("key").to_pylist())
    # What was readable is sharded, in order; nothing is left aside.
    samples = read_samples(output)
    assert set(samples) == set(parts[0].column("key").to_pylist())
    for group, keys in input_order([folder / "part-0.parquet"]).items():
        assert shard_order(output, group) == keys
    assert not (output / "_work").exists()
    assert not [p for p in output.rglob("*") if "inprogress" in p.name]


# ---- 5. resume, refusal, overwrite --------------------------------------------------------------


def mtimes(root: Path) -> dict[str, int]:
    return {name: p.stat().st_mtime_ns for name, p in tree(root, "webdataset", "parquet").items()}


def test_resume_rewrites_only_the_missing_shard(built, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(built["dataset"], dataset)
    manifest = manifest_of(dataset)
    before = digests(dataset, "webdataset", "parquet")
    victim = manifest["shards"][len(manifest["shards"]) // 2]["path"]
    (dataset / victim).unlink()
    kept = mtimes(dataset)
    # What a crashed attempt may leave: a file aside and a shard beyond the last.
    junk = [
        dataset / "webdataset/commercial/_000000.tar.inprogress",
        dataset / "parquet/other/999999.parquet",
    ]
    for path in junk:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left over")

    report = run_shard(built["extract"], dataset)
    counts = assert_balanced(report)
    assert report["mode"] == "resume"
    assert counts["shards_written"] == 1
    assert counts["shards_kept"] == len(manifest["shards"]) - 1
    assert counts["out"] == len(built["figures"])
    after = mtimes(dataset)
    assert {name: after[name] for name in kept} == kept
    assert not any(path.exists() for path in junk)
    listed = {s[k] for s in manifest["shards"] for k in ("path", "parquet_path")}
    assert set(tree(dataset, "webdataset", "parquet")) == listed
    assert digests(dataset, "webdataset", "parquet") == before
    assert manifest_of(dataset) == manifest

    # Other parameters into the same output: refused, nothing touched.
    snapshot = {name: (sha256(p), p.stat().st_mtime_ns) for name, p in tree(dataset, "").items()}
    with pytest.raises(SystemExit, match="--overwrite"):
        shard_pipeline.run(
            ["--input", str(built["extract"]), "--output", str(dataset), "--samples_per_shard", "5"]
        )
    assert {n: (sha256(p), p.stat().st_mtime_ns) for n, p in tree(dataset, "").items()} == snapshot

    # With --overwrite the new run replaces the old one entirely.
    report = shard_pipeline.run(
        [
            "--input",
            str(built["extract"]),
            "--output",
            str(dataset),
            "--samples_per_shard",
            "5",
            "--overwrite",
        ]
    )
    counts = assert_balanced(report)
    assert report["mode"] == "overwrite" and counts["out"] == len(built["figures"])
    manifest = manifest_of(dataset)
    assert manifest["parameters"]["samples_per_shard"] == 5
    assert all(s["samples"] <= 5 for s in manifest["shards"])
    listed = {s["path"] for s in manifest["shards"]} | {
        s["parquet_path"] for s in manifest["shards"]
    }
    assert set(tree(dataset, "webdataset", "parquet")) == listed
    assert len(read_samples(dataset)) == len(built["figures"])


# ---- 6. atomic writes ---------------------------------------------------------------------------


def test_atomic_write_never_shows_a_partial_file(tmp_path):
    final = tmp_path / "sub" / "000000.tar"
    aside = tmp_path / "sub" / "_000000.tar.inprogress"
    seen = []

    def chunks(fail: bool):
        yield b"first half "
        seen.append((aside.exists(), final.exists()))
        if fail:
            raise RuntimeError("disk gone")
        yield b"second half"

    with pytest.raises(RuntimeError, match="disk gone"):
        storage.atomic_write(str(final), chunks(fail=True))
    assert seen == [(True, False)]
    assert not final.exists() and not aside.exists()

    storage.atomic_write(str(final), chunks(fail=False))
    assert final.read_bytes() == b"first half second half" and not aside.exists()
    assert seen[-1] == (True, False)

    # A failed rewrite keeps the old file whole.
    with pytest.raises(RuntimeError):
        storage.atomic_write(str(final), chunks(fail=True))
    assert seen[-1] == (True, True)
    assert final.read_bytes() == b"first half second half" and not aside.exists()
    assert sorted(p.name for p in final.parent.iterdir()) == ["000000.tar"]


# ---- 7. bad input -------------------------------------------------------------------------------


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def test_sanitize_unit():
    row = {"key": b"PMC1.F1/a", "image": b"\xff\xd8\xff\xe0rest", "caption": b"bad \xff byte"}
    clean = sanitize(row)
    assert clean["key"] == "PMC1-F1-a"
    assert clean["caption"] == "bad \ufffd byte"
    assert clean["fixes"] == ["key_rewritten_from:PMC1.F1/a", "caption_invalid_utf8_replaced"]
    assert json.loads(sample_json(clean))["txt"] == "bad \ufffd byte"
    # Earlier fixes are kept, new ones added after them.
    again = sanitize({**clean, "caption": "tab\there\x00"})
    assert again["fixes"][-1] == "caption_control_characters_removed"
    assert again["caption"] == "tab\there"
    long = sanitize({**clean, "caption": "word " * 100}, max_caption_chars=50)
    assert len(long["caption"]) <= 50 and long["caption"].endswith("…")
    assert long["fixes"][-1] == "caption_truncated_from_chars:500"
    for bad, reason in (
        ({**row, "key": "..."}, "key_invalid"),
        ({**row, "image": None}, "image_missing"),
        ({**row, "image": png_bytes()}, "image_not_jpeg"),
        ({**row, "caption": " \x00\n "}, "caption_empty"),
        ({**row, "caption": None}, "caption_empty"),
    ):
        with pytest.raises(SampleRejected) as err:
            sanitize(bad)
        assert err.value.reason == reason


def test_batch_json_equals_row_json(built):
    """The shard writer's batch JSON (article part serialized once per run of rows) is byte
    for byte the JSON of each row, also where rows of one article differ in one field."""
    rows = [sanitize(row) for row in built["figures"].values()]
    rows.sort(key=lambda r: r["key"])  # figures of an article together
    twin = {**rows[1], "article_keywords": [*rows[1]["article_keywords"], "changed"]}
    rows = [rows[0], rows[1], twin, rows[1], *rows[2:]]
    assert rows[0]["article_accession_id"] == rows[1]["article_accession_id"]
    rows[3] = {**rows[3], "image_source": b"bytes \xff where text belongs"}
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    assert sample_jsons(columns) == [sample_json(row) for row in rows]
    assert json.loads(sample_jsons(columns)[3])["image_source"] == "bytes \ufffd where text belongs"
    # A field that would sort before the article's ones: the plain path, same bytes.
    odd = {**columns, "aaa": list(range(len(rows)))}
    assert sample_jsons(odd) == [sample_json({**r, "aaa": i}) for i, r in enumerate(rows)]


def test_bad_input_fixed_or_dead_lettered(built, tmp_path):
    from datasets import load_dataset

    originals = list(built["figures"].values())
    base = originals[:8]

    def copy(i: int, suffix: str, **changes) -> dict:
        return {**base[i], "key": f"{base[i]['key']}_{suffix}", **changes}

    huge = ("lorem ipsum " * 90_000)[:1_000_000]
    dotted = f"{base[0]['key']}.v2/panel.a"
    bad = [
        copy(0, "x", key=dotted),
        copy(1, "nul", caption="Figure 1\x00 with a NUL\x01 and\x7f controls"),
        copy(2, "empty", caption=" \n\t "),
        copy(3, "huge", caption=huge),
        copy(4, "png", image=png_bytes()),
        copy(5, "noimage", image=None),
        copy(6, "nokey", key="./."),
        {**base[7], "caption": base[7]["caption"] + " (second copy)"},  # duplicate key
    ]
    rows = originals + bad
    folder = tmp_path / "figures"
    folder.mkdir()
    half = len(rows) // 2
    for i, part in enumerate((rows[:half], rows[half:])):
        pq.write_table(pa.Table.from_pylist(part, schema=FIGURE_SCHEMA), folder / f"f{i}.parquet")
    output = tmp_path / "dataset"
    report = run_shard(folder / "*.parquet", output)
    counts = assert_balanced(report)
    manifest = manifest_of(output)
    dead = read_dead_letters(output)
    assert counts["in"] == len(rows)
    assert manifest["totals"]["samples"] + len(dead) == len(rows) == counts["out"] + len(dead)
    reasons = Counter(d["reason"] for d in dead)
    assert reasons == {
        "caption_empty": 1,
        "image_not_jpeg": 1,
        "image_missing": 1,
        "key_invalid": 1,
        "duplicate_key": 1,
    }
    assert counts["dead_letter_by_reason"] == dict(reasons)
    assert {d["stage"] for d in dead} == {"shard"}
    by_reason = {d["reason"]: d["key"] for d in dead}
    assert by_reason["caption_empty"] == bad[2]["key"]
    assert by_reason["image_not_jpeg"] == bad[4]["key"]
    assert by_reason["duplicate_key"] == base[7]["key"]
    # A row whose image fails is found only as its shard is written: its place stays empty,
    # so a shard may be one short (or, where it was the only sample of one, not be written).
    per_shard = int(PER_SHARD)
    for group, info in manifest["groups"].items():
        failed = sum(1 for r in (bad[4], bad[5]) if r["article_license_group"] == group)
        shards = [e["samples"] for e in manifest["shards"] if e["group"] == group]
        assert sum(shards) == info["samples"] and all(0 < n <= per_shard for n in shards)
        assert sum(per_shard - n for n in shards[:-1]) <= failed
        assert -(-info["samples"] // per_shard) <= len(shards)
        assert len(shards) <= -(-(info["samples"] + failed) // per_shard)

    samples = read_samples(output)
    assert len(samples) == manifest["totals"]["samples"]
    rewritten = re.sub(r"[^A-Za-z0-9_-]", "-", dotted)
    assert rewritten in samples and dotted not in samples
    assert samples[rewritten]["json"]["fixes"] == [f"key_rewritten_from:{dotted}"]
    assert samples[rewritten]["json"]["key"] == rewritten
    assert samples[rewritten]["jpg"] == base[0]["image"]
    nul = samples[bad[1]["key"]]
    assert nul["txt"] == "Figure 1  with a NUL  and  controls" == nul["json"]["caption"]
    assert nul["json"]["fixes"] == ["caption_control_characters_removed"]
    cut = samples[bad[3]["key"]]
    max_chars = manifest["parameters"]["max_caption_chars"]
    assert len(cut["txt"]) <= max_chars and huge.startswith(cut["txt"].removesuffix(" …"))
    assert cut["json"]["fixes"] == [f"caption_truncated_from_chars:{len(huge)}"]
    # The kept duplicate is one of the two rows, the same one on every run.
    assert samples[base[7]["key"]]["txt"] in (base[7]["caption"], bad[7]["caption"])
    # Untouched rows carry no fixes; the Parquet says the same as the JSON.
    parquet = {r["key"]: r for r in read_table_recursive(output / "parquet")}
    assert set(parquet) == set(samples)
    for key, sample in samples.items():
        assert parquet[key]["fixes"] == sample["json"]["fixes"]
        assert parquet[key]["caption"] == sample["txt"]
    fixed = {k for k, s in samples.items() if s["json"]["fixes"]}
    assert fixed == {rewritten, bad[1]["key"], bad[3]["key"]}

    # Hugging Face loads the groups through the card, fixes included.
    for group, info in manifest["groups"].items():
        loaded = load_dataset(str(output), group, split="train", cache_dir=str(tmp_path / "hf"))
        assert len(loaded) == info["samples"]
        for sample in loaded:
            assert sample["json"]["fixes"] == samples[sample["__key__"]]["json"]["fixes"]


def read_table_recursive(folder: Path) -> list[dict]:
    return pads.dataset(folder, format="parquet").to_table().to_pylist()


# ---- 8. gs:// output ----------------------------------------------------------------------------

GCS_BUCKET = "shard-test"


@pytest.fixture
def gcs_client():
    with gcs_emulator(GCS_BUCKET) as client:
        yield client


def test_gcs_output(built, gcs_client, no_credential_retries):
    # The emulator is set after import: storage must settle credentials before Beam's
    # first gs:// call, or Beam's lookup retries with backoff for about 20 s.
    output = f"gs://{GCS_BUCKET}/ds"
    report = run_shard(built["extract"], output)
    counts = assert_balanced(report)
    assert counts["out"] == len(built["figures"])
    bucket = gcs_client.bucket(GCS_BUCKET)
    manifest = json.loads(bucket.blob("ds/manifest.json").download_as_bytes())
    assert manifest["shards"] == manifest_of(built["dataset"])["shards"]
    for entry in manifest["shards"][:2]:
        data = bucket.blob(f"ds/{entry['path']}").download_as_bytes()
        assert len(data) == entry["bytes"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        parquet = bucket.blob(f"ds/{entry['parquet_path']}").download_as_bytes()
        assert hashlib.sha256(parquet).hexdigest() == entry["parquet_sha256"]
    names = {blob.name for blob in gcs_client.list_blobs(GCS_BUCKET, prefix="ds/")}
    assert not [n for n in names if "inprogress" in n or "/_work/" in n], names
    assert {"ds/README.md", "ds/run_report.json", "ds/_run.json"} <= names
    # Rerun: resume keeps every shard.
    report = run_shard(built["extract"], output)
    assert report["mode"] == "resume"
    assert report["stages"]["shard"]["shards_kept"] == len(manifest["shards"])
    assert report["stages"]["shard"].get("shards_written", 0) == 0


# ---- 9. dataset card ----------------------------------------------------------------------------


def test_dataset_card(built):
    dataset = built["dataset"]
    manifest = manifest_of(dataset)
    card = (dataset / "README.md").read_text()
    assert card.startswith("---\n") and "configs:" in card and "dataset_info:" in card
    rows = dict(re.findall(r"^\| (\w+) \| ([\d,]+) \| [\d,]+ \|$", card, flags=re.M))
    assert {g: int(n.replace(",", "")) for g, n in rows.items()} == {
        g: v["samples"] for g, v in manifest["groups"].items()
    }
    assert f"**{manifest['totals']['samples']:,} samples**" in card
    for group in manifest["groups"]:
        assert f"path: webdataset/{group}/*.tar" in card
    for name in ("license_groups", "journals", "years"):
        path = dataset / "charts" / f"{name}.png"
        assert f"(charts/{name}.png)" in card
        with Image.open(path) as image:
            assert image.format == "PNG"
            image.verify()
    years = Counter(str(r["article_year"]) for r in built["figures"].values())
    for year, n in years.items():
        assert f"| {year} | {n:,} |" in card


# ---- 10. subset ---------------------------------------------------------------------------------


def run_subset(built, output: Path, where: str) -> dict:
    return subset_pipeline.run(
        [
            "--input",
            str(built["dataset"]),
            "--output",
            str(output),
            "--where",
            where,
            "--samples_per_shard",
            PER_SHARD,
        ]
    )


def test_subset_by_license_group(built, tmp_path):
    figures = built["figures"]
    output = tmp_path / "commercial"
    report = run_subset(built, output, "article_license_group == 'commercial'")
    assert report["balanced"], report
    commercial = {k for k, r in figures.items() if r["article_license_group"] == "commercial"}
    subset = report["stages"]["subset"]
    assert subset["in"] == len(figures) and subset["out"] == len(commercial)
    assert subset["filtered"] == len(figures) - len(commercial)
    assert report["stages"]["shard"]["out"] == len(commercial)
    manifest = manifest_of(output)
    assert set(manifest["groups"]) == {"commercial"}
    assert manifest["totals"]["samples"] == len(commercial)
    assert manifest["parameters"]["where"] == "article_license_group == 'commercial'"
    samples = read_samples(output)
    assert set(samples) == commercial
    source = read_samples(built["dataset"], "commercial")
    for key, sample in samples.items():
        assert sample["jpg"] == source[key]["jpg"] == figures[key]["image"]
        assert sample["json"] == source[key]["json"]
    # Same samples, same shard size: the very same shards.
    assert digests(output, "webdataset", "parquet") == digests(
        built["dataset"], "webdataset/commercial", "parquet/commercial"
    )


def test_subset_by_list_field(built, tmp_path):
    figures = built["figures"]
    counts = Counter(k for row in figures.values() for k in set(row["article_keywords"]))
    keyword = next(k for k, n in counts.most_common() if n < len(figures))
    output = tmp_path / "keyword"
    report = run_subset(built, output, f"{keyword!r} in article_keywords")
    assert report["balanced"], report
    wanted = {k for k, row in figures.items() if keyword in row["article_keywords"]}
    samples = read_samples(output)
    assert set(samples) == wanted and report["stages"]["subset"]["out"] == len(wanted)
    for key, sample in samples.items():
        assert sample["jpg"] == figures[key]["image"]
        assert sample["txt"] == figures[key]["caption"]


def test_subset_of_a_damaged_dataset(built, tmp_path, monkeypatch):
    """A source shard whose tar is gone, and one whose Parquet is cut short: dead letters,
    and the rest of the subset as it would be."""
    from transforms.shard import write_shards as shard_module

    monkeypatch.setattr(shard_module, "RETRY_SECONDS", 0)
    source = tmp_path / "source"
    shutil.copytree(built["dataset"], source)
    shards = manifest_of(source)["shards"]
    gone, cut = shards[0], shards[1]
    (source / gone["path"]).unlink()
    index = source / cut["parquet_path"]
    index.write_bytes(index.read_bytes()[:500])
    output = tmp_path / "subset"
    report = subset_pipeline.run(
        ["--input", str(source), "--output", str(output), "--where", "len(key) > 0"]
    )
    assert report["balanced"], report
    dead = read_dead_letters(output)
    lost = pq.read_table(built["dataset"] / gone["parquet_path"]).column("key").to_pylist()
    assert Counter(d["reason"] for d in dead) == {"unit_unreadable": len(lost) + 1}
    # The gone tar: each of its matches, with the error; the cut index: itself.
    assert sorted(d["key"] for d in dead if d["key"] in lost) == sorted(lost)
    assert all(
        "No such file" in d["detail"] or "not found" in d["detail"].lower()
        for d in dead
        if d["key"] in lost
    )
    assert [d["key"] for d in dead if d["key"] not in lost] == [
        cut["path"].removeprefix("webdataset/")
    ]
    expected = set(built["figures"]) - set(lost)
    expected -= set(pq.read_table(built["dataset"] / cut["parquet_path"]).column("key").to_pylist())
    assert set(read_samples(output)) == expected
    assert report["stages"]["subset"]["out"] == len(expected) + len(lost)


@pytest.mark.parametrize(
    "where",
    ["no_such_field == 1", "__import__('os').system('true')", "article_year >", "key.upper()"],
)
def test_subset_refuses_bad_filters(built, tmp_path, where):
    output = tmp_path / "refused"
    with pytest.raises(SystemExit, match="--where"):
        run_subset(built, output, where)
    assert not output.exists()
