"""Train OpenCLIP on a biomedica dataset by streaming its shards (OpenCLIP's own trainer).

    python examples/train_openclip_streaming.py --server http://127.0.0.1:8080 --group commercial \\
        -- --model ViT-L-14 --pretrained ... --batch-size 256 ...
    python examples/train_openclip_streaming.py --dataset out/demo/dataset --tiny \\
        -- --epochs 2 --batch-size 16

The shard list and the sample count come from the dataset's manifest: the server's
`GET /api/manifest` (`{"dataset": <manifest.json>, ...}`), or DS/manifest.json. The script
turns the chosen groups' shards into one webdataset URL pattern (`{000000..000041}` ranges,
several joined with `::`) and runs `open_clip_train.main.main` in this process with
`--dataset-type webdataset --train-data URL --train-num-samples N` followed by every flag
after `--`, unchanged (the trainer's argparse keeps the last value of a flag given twice,
so a user's `--train-num-samples` wins over the manifest's).

Shard URLs webdataset 0.2.86 opens (webdataset/gopen.py): http(s)://, local paths, gs://
through `gsutil cat`, `pipe:COMMAND`. webdataset's own http(s) opener is a `curl -f -s -L`
child process per shard; this script registers transforms/shard/http_stream.py's Python
reader for http(s) instead (large socket reads, keep-alive, resuming a dropped connection
with Range), in this process, so the trainer's dataloader workers (forked) use it too;
`--curl` keeps webdataset's curl pipe (the fallback). s3://
is not one of them: it is rewritten to `pipe:aws s3 cp s3://... -`. A shard that fails
to open or breaks mid-stream is only a warning in OpenCLIP's trainer ("Handling webdataset
error ... Ignoring"), and a run whose every shard fails trains on nothing (or spins, with
--dataset-resampled), so every http(s) and local shard is checked before training starts
(HEAD, or the file's size), unless --no_check.

`--tiny` registers a small ViT config (`biomedica-tiny`, see TINY_CONFIG) with
`open_clip.add_model_config` in this process, then puts CPU defaults before the user's flags
(`--model biomedica-tiny --device cpu --precision fp32 --workers 1`): a CPU smoke run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request

TINY_MODEL = "biomedica-tiny"
# A ViT small enough to train for a few dozen steps on two CPU cores in seconds. The text
# tower keeps CLIP's vocabulary (49408), which open_clip's bundled BPE tokenizer needs.
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {
        "context_length": 32,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
    },
}
TINY_DEFAULTS = ["--model", TINY_MODEL, "--device", "cpu", "--precision", "fp32", "--workers", "1"]
HTTP_TIMEOUT_S = 30
CHECK_THREADS = 8


class SourceError(Exception):
    """The dataset, its manifest or its shards cannot be used: a one-line reason."""


# ---- the shards to stream (pure) -------------------------------------------------------------


def group_patterns(manifest: dict) -> dict[str, list[str]]:
    """{group: ["<group>/{000000..000041}.tar", ...]}: each run of consecutive shard indexes
    of a group as one brace range (the dataset card's), relative to DS/webdataset/."""
    from transforms.shard.dataset_card import shard_urls

    patterns = {}
    for group, url in shard_urls(manifest).items():
        parts = url.split("::")
        if not all(p.startswith(f"webdataset/{group}/") for p in parts):
            raise SourceError(f"manifest shards of {group} are not under webdataset/{group}/")
        patterns[group] = [p.removeprefix("webdataset/") for p in parts]
    return patterns


def stream_url(base: str, pattern: str) -> str:
    """A shard pattern under `base`, in a form webdataset opens (s3:// through the aws CLI)."""
    url = f"{base.rstrip('/')}/{pattern}"
    if url.startswith("s3://"):
        return f"pipe:aws s3 cp {url} -"
    return url


def training_source(manifest: dict, base: str, groups: list[str] | None) -> tuple[str, int, int]:
    """(the `--train-data` value, its samples, its shards) for the chosen groups (all: None)."""
    patterns = group_patterns(manifest)
    known = manifest.get("groups") or {}
    chosen = groups or sorted(patterns)
    missing = [g for g in chosen if g not in patterns]
    if missing:
        raise SourceError(
            f"group {', '.join(missing)} has no shards in the manifest "
            f"(groups: {', '.join(sorted(patterns)) or 'none'})"
        )
    urls = [stream_url(base, p) for g in chosen for p in patterns[g]]
    if any("::" in u.replace("://", "") for u in urls):
        raise SourceError(f"{base} holds '::', which webdataset reads as a URL separator")
    samples = sum(
        known[g]["samples"]
        if g in known
        else sum(s["samples"] for s in manifest["shards"] if s["group"] == g)
        for g in chosen
    )
    shards = sum(1 for s in manifest["shards"] if s["group"] in chosen)
    return "::".join(urls), samples, shards


def expand(train_data: str) -> list[str]:
    """Every shard URL of a `--train-data` value (webdataset's own expansion)."""
    from webdataset.shardlists import expand_urls

    return list(expand_urls(train_data))


# ---- where the manifest comes from -----------------------------------------------------------


def server_manifest(server: str) -> dict:
    """The dataset manifest a `biomedica serve` publishes at /api/manifest."""
    url = f"{server.rstrip('/')}/api/manifest"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise SourceError(f"cannot read {url}: {err}") from None
    if not isinstance(body, dict) or not isinstance(body.get("dataset"), dict):
        raise SourceError(f"{url} has no 'dataset' manifest")
    return body["dataset"]


def dataset_manifest(dataset: str) -> dict:
    """DS/manifest.json of a local, gs:// or s3:// dataset."""
    if "://" not in dataset:  # a plain read: storage would import Beam (seconds) for nothing
        path = os.path.join(dataset, "manifest.json")
        try:
            with open(path, "rb") as handle:
                return json.load(handle)
        except (OSError, ValueError) as err:
            raise SourceError(f"cannot read {path}: {err}") from None
    from transforms import storage

    uri = storage.join(dataset, "manifest.json")
    try:
        return json.loads(storage.read_bytes(uri))
    except (storage.StorageError, ValueError) as err:
        raise SourceError(f"cannot read {uri}: {err}") from None


# ---- checks before training ------------------------------------------------------------------


def _check_one(url: str) -> str | None:
    """Why the shard at `url` cannot be streamed, or None; only http(s) and local paths."""
    if url.startswith(("http://", "https://")):
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                size = response.headers.get("Content-Length")
        except urllib.error.HTTPError as err:
            return f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            return str(getattr(err, "reason", err))
        return "empty" if size == "0" else None
    if "://" in url or url.startswith("pipe:"):
        return None  # gs://, pipe:: read by their own tools; not checked here
    if not os.path.isfile(url):
        return "no such file"
    return "empty" if os.path.getsize(url) == 0 else None


def check_shards(urls: list[str], curl: bool = False) -> None:
    """SourceError naming the first shard that cannot be streamed (and how many cannot)."""
    web = any(u.startswith(("http://", "https://")) for u in urls)
    if curl and web and not shutil.which("curl"):
        raise SourceError("webdataset streams http(s) shards through curl, which is not installed")
    with concurrent.futures.ThreadPoolExecutor(CHECK_THREADS) as pool:
        problems = [(u, p) for u, p in zip(urls, pool.map(_check_one, urls), strict=True) if p]
    if problems:
        url, problem = problems[0]
        more = f" (and {len(problems) - 1} more of {len(urls)})" if len(problems) > 1 else ""
        raise SourceError(f"shard {url} cannot be streamed: {problem}{more}")


# ---- the trainer ------------------------------------------------------------------------------


def trainer_argv(train_data: str, samples: int, passthrough: list[str], tiny: bool) -> list[str]:
    """The trainer's argv: ours first, the user's after (so theirs win)."""
    ours = ["--dataset-type", "webdataset", "--train-data", train_data]
    ours += ["--train-num-samples", str(samples)]
    return ours + (TINY_DEFAULTS if tiny else []) + passthrough


def register_tiny_model() -> None:
    """Make `biomedica-tiny` a model name open_clip knows, in this process."""
    import open_clip

    folder = tempfile.mkdtemp(prefix="biomedica-openclip-")
    path = os.path.join(folder, f"{TINY_MODEL}.json")
    with open(path, "w") as handle:
        json.dump(TINY_CONFIG, handle)
    open_clip.add_model_config(path)


def train(argv: list[str], tiny: bool, curl: bool = False) -> int:
    # The PyPI torchvision wheel does not load on the CPU torch this project pins; the shim
    # must run before anything imports torchvision (open_clip does).
    from transforms.embed.torch_shim import ensure_torchvision

    ensure_torchvision()
    if not curl:
        # Before the trainer builds its WebDataset: its (forked) dataloader workers inherit it.
        from transforms.shard.http_stream import use_http_stream

        use_http_stream()
    if tiny:
        register_tiny_model()
    from open_clip_train.main import main as trainer_main

    result = trainer_main(argv)
    # main() returns -1 for the errors it prints itself (an existing --name, say).
    return 0 if result in (None, 0) else 1


# ---- command line ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_openclip_streaming.py",
        description="Run OpenCLIP's trainer on a biomedica dataset's shards, streamed. "
        "Flags after `--` go to open_clip_train unchanged.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--server", help="a `biomedica serve` URL: its /api/manifest and /shards/")
    source.add_argument(
        "--dataset", help="a dataset folder (local, gs://, s3://): its manifest.json"
    )
    p.add_argument(
        "--group",
        action="append",
        help="license group to train on (repeat or comma-separate; default: every group)",
    )
    p.add_argument(
        "--shards_base",
        help="where <group>/<n>.tar lie (default: SERVER/shards, or DATASET/webdataset)",
    )
    p.add_argument("--tiny", action="store_true", help="CPU smoke run with a tiny ViT")
    p.add_argument(
        "--curl",
        action="store_true",
        help="stream http(s) shards with webdataset's curl pipe, not the Python reader",
    )
    p.add_argument("--no_check", action="store_true", help="skip checking the shards first")
    p.add_argument("--dry_run", action="store_true", help="print the trainer's argv (JSON), stop")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    ours, passthrough = argv[:split], argv[split + 1 :]
    args = parser().parse_args(ours)
    groups = [g for value in args.group or [] for g in value.split(",") if g] or None
    try:
        if args.server:
            manifest = server_manifest(args.server)
            base = args.shards_base or f"{args.server.rstrip('/')}/shards"
        else:
            manifest = dataset_manifest(args.dataset)
            base = args.shards_base or f"{args.dataset.rstrip('/')}/webdataset"
        train_data, samples, shards = training_source(manifest, base, groups)
        if not args.no_check and not args.dry_run:
            check_shards(expand(train_data), curl=args.curl)
    except SourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    trainer = trainer_argv(train_data, samples, passthrough, args.tiny)
    if args.dry_run:
        print(json.dumps(trainer))
        return 0
    print(f"streaming {shards} shards, {samples} samples: {train_data}", file=sys.stderr)
    print("open_clip_train.main " + " ".join(trainer), file=sys.stderr)
    return train(trainer, args.tiny, curl=args.curl)


if __name__ == "__main__":
    sys.exit(main())
