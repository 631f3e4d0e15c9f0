"""The shard job done the plainest way, as the benchmark's reference: one process reads the
extract's figure Parquet, builds each sample's jpg, json and txt as the shard stage does,
and writes them into one plain tar with `tarfile`. No plan, order, index, hash or runner.

    python bench/plain_tar_job.py --input bench/results/out-5000 --output /tmp/plain.tar
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from transforms.shard.samples import sample_json, sanitize  # noqa: E402


def rows_of(source: Path):
    """Figure rows of an extract output, checked and fixed as the shard stage does."""
    for part in sorted((source / "extract" / "figures").glob("*.parquet")):
        for batch in pq.ParquetFile(part, pre_buffer=False).iter_batches(batch_size=256):
            yield from (sanitize(row) for row in batch.to_pylist())


def members(rows):
    for row in rows:
        yield row["key"], row["image"], sample_json(row), row["caption"].encode()


def write_tar(target: Path, samples) -> int:
    count = 0
    with tarfile.open(target, "w") as tar:
        for key, *payloads in samples:
            for ext, data in zip(("jpg", "json", "txt"), payloads, strict=True):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, fileobj=io.BytesIO(data))
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    print(write_tar(Path(args.output), members(rows_of(Path(args.input)))))


if __name__ == "__main__":
    main()
