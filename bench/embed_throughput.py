"""Benchmark: images per second through the embed pipeline, against a plain loop.

    python bench/embed_throughput.py [--articles 40] [--image_side 512] [--threads 2]

Generates a sample corpus and extracts it (or takes --input, an extract output), then for
each model (pixels; a random open_clip:ViT-S-32), in this one process, with the same batch
size and torch threads:

- loop: read the figure files' key, image and caption columns with pyarrow and call the
  embedder the pipeline's handler uses (`embed_batch`: decode, forward, checks) batch by
  batch, then write the vectors as the embeddings table; model load included;
- pipeline: `biomedica embed` on Beam's in-process runner (one worker), model load and
  job set-up included.

Each is run --runs times, alternated, and the best kept: wall-clock images per second, and
images per CPU second of this process (less disturbed by other work on the machine).

The ratio pipeline/loop is what Beam (reading, RunInference's batching, the group by figure
file, the writes and the report) costs. Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = (("pixels", None), ("open_clip:ViT-S-32", "none"))


def _extract(articles: int, side: int, folder: Path) -> Path:
    from pipelines.extract import run as extract
    from transforms.pmc.sample_corpus import generate_corpus

    generate_corpus(str(folder / "corpus"), articles, seed=0, image_side=side)
    extract(["--source", str(folder / "corpus"), "--output", str(folder / "extract")])
    return folder / "extract"


def _loop(source: Path, model: str, weights, batch: int, out: Path) -> dict:
    import pyarrow.parquet as pq

    from transforms import sinks
    from transforms.embed import files
    from transforms.embed.handlers import embed_batch
    from transforms.embed.models import load_embedder

    started, cpu = time.perf_counter(), time.process_time()
    embedder = load_embedder(model, weights, "cpu", batch)
    images = 0
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((source / "extract" / "figures").glob("*.parquet")):
        (table,) = sinks.read_parquet(str(path), columns=list(files.COLUMNS))
        table = table.to_pydict()
        rows = []
        for start in range(0, len(table["key"]), batch):
            chunk = slice(start, start + batch)
            examples = list(zip(table["image"][chunk], table["caption"][chunk], strict=True))
            for offset, result in enumerate(embed_batch(embedder, examples)):
                if result.ok:
                    key = table["key"][start + offset]
                    rows.append((start + offset, key, result.image, result.caption))
            images += len(examples)
        written = files.embeddings_table(rows, embedder.model_id, embedder.dim, embedder.has_text)
        pq.write_table(written, out / path.name)
    return _rates(images, time.perf_counter() - started, time.process_time() - cpu)


def _rates(images: int, seconds: float, cpu: float) -> dict:
    return {
        "images": images,
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "per_s": round(images / seconds, 2),
        "per_cpu_s": round(images / cpu, 2),
    }


def _pipeline(source: Path, model: str, weights, batch: int, out: Path) -> dict:
    from pipelines.embed import run

    argv = ["--input", str(source), "--output", str(out), "--model", model]
    argv += ["--batch_size", str(batch), "--log_level", "ERROR", "--overwrite"]
    if weights:
        argv += ["--weights", weights]
    started, cpu = time.perf_counter(), time.process_time()
    report = run(argv)
    return _rates(
        report["stages"]["embed"]["in"], time.perf_counter() - started, time.process_time() - cpu
    )


def _best(runs: list[dict]) -> dict:
    best = dict(max(runs, key=lambda r: r["per_s"]))
    best["per_cpu_s"] = max(r["per_cpu_s"] for r in runs)
    best["per_s_of_runs"] = [r["per_s"] for r in runs]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", help="an extract output (default: generate one)")
    parser.add_argument("--articles", type=int, default=40)
    parser.add_argument("--image_side", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--models", default=",".join(m for m, _ in MODELS))
    parser.add_argument("--runs", type=int, default=3, help="alternated runs of each; best")
    parser.add_argument("--keep", help="keep the generated extract output in this folder")
    args = parser.parse_args()

    from transforms.embed.torch_shim import ensure_torchvision

    ensure_torchvision()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        folder = Path(tmp)
        if args.input:
            source = Path(args.input)
        else:
            source = _extract(args.articles, args.image_side, Path(args.keep or tmp))
        results = {"torch_threads": torch.get_num_threads(), "batch_size": args.batch_size}
        wanted = args.models.split(",")
        for model, weights in MODELS:
            if model not in wanted:
                continue
            loops, pipes = [], []
            for _ in range(args.runs):  # alternated: a busy machine slows both alike
                loops.append(_loop(source, model, weights, args.batch_size, folder / "l" / model))
                pipes.append(
                    _pipeline(source, model, weights, args.batch_size, folder / "p" / model)
                )
            loop, pipe = _best(loops), _best(pipes)
            results[model] = {
                "loop": loop,
                "pipeline": pipe,
                "pipeline_over_loop": round(pipe["per_s"] / loop["per_s"], 3),
                "pipeline_over_loop_cpu": round(pipe["per_cpu_s"] / loop["per_cpu_s"], 3),
            }
            print(json.dumps({model: results[model]}), flush=True)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
