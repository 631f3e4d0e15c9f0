"""`biomedica run`: the whole pipeline in one command: extract (discover, extract, dedupe),
enrich (with --medline or --eutils), embed, annotate, shard and index.

    biomedica run --source data/sample --output out/run [--medline 'pubmed/*.xml.gz']

Every stage writes its usual output under --output (extract/, enrich/, embed/, annotate/,
dataset/, index/), so any stage can be run again alone with its own command on those folders;
run_report.json gathers the stages' reports. The flags are the stage commands' flags, each
handed to the stages that define it; Beam's flags (--runner, ...) go to every stage.

Each stage is its own Beam job on the runner the flags name, awaited before the next starts
(on Dataflow too): each ends at a barrier the next needs whole (the PMID join, k-means over
every embedding, the shard plan over every sample, the ids of every shard), and a stage's
files at that barrier are what let it be re-run alone. On Dataflow it also lets embed run
on GPU workers while the other stages run on CPU ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pipelines import flags
from pipelines import options as options_of
from pipelines.extract import WATERMARK
from pipelines.flags import UsageError
from pipelines.runner import (
    REPORT,
    main_of,
    output_lock,
    prepare_output,
    refuse_overlap,
    waiting_for_jobs,
)
from transforms import storage
from transforms.annotate.clustering import MODEL_FILE as CLUSTER_MODEL
from transforms.shard import replaced
from transforms.sinks import write_parquet

# Stage, its folder under --output, its module.
STAGES = (
    ("extract", "extract", "pipelines.extract"),
    ("enrich", "enrich", "pipelines.enrich"),
    ("embed", "embed", "pipelines.embed"),
    ("annotate", "annotate", "pipelines.annotate"),
    ("shard", "dataset", "pipelines.shard"),
    ("index", "index", "pipelines.index"),
)
FOLDERS = {stage: folder for stage, folder, _ in STAGES}
MODULES = {stage: module for stage, _, module in STAGES}
# Flags run sets for each stage itself: where a stage reads and writes.
WIRED = frozenset({"--output", "--input", "--embeddings", "--annotations", "--source", "--dataset"})
# An incremental run's list of the earlier samples its new versions replace.
REPLACES = "replaces.parquet"
# The flags that say where PubMed records come from: enrich runs when one is given.
PUBMED_SOURCES = ("--medline", "--eutils")


def _actions(classes) -> dict[str, argparse.Action]:
    """Each option string of `classes` -> its argparse action."""
    parser = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
    for cls in classes:
        cls._add_argparse_args(parser)
    return {o: a for a in parser._actions for o in a.option_strings}


def split_flags(argv: list[str]) -> list[tuple[str, list[str]]]:
    """argv as (flag, its tokens), by the run's and Beam's own flag definitions."""
    beam = {o: a for a in flags._beam_parser()._actions for o in a.option_strings}
    known = {**beam, **_actions(options_of.OPTIONS_OF["run"])}
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        name, eq, _ = token.partition("=")
        action = known.get(name)
        takes_value = action is not None and action.nargs != 0
        if takes_value and not eq and i + 1 < len(argv):
            out.append((name, [token, argv[i + 1]]))
            i += 2
        else:
            out.append((name, [token]))
            i += 1
    return out


def stage_argv(stage: str, given: list[tuple[str, list[str]]]) -> list[str]:
    """The flags of `given` that `stage` takes (its own, and every Beam flag)."""
    mine = set(_actions(options_of.OPTIONS_OF[stage]))
    ours = set(_actions(options_of.OPTIONS_OF["run"]))
    out = []
    for name, tokens in given:
        if name in WIRED - {"--source"} or name == "--stages":
            continue  # set per stage by `plan`; --source is extract's alone
        if name in mine or name not in ours:
            out += tokens
    return out


def plan(argv: list[str]):
    """Check the flags (strictly, before any work); (output, [(stage, its argv)], the parsed
    flags)."""
    for flag in ("--embeddings", "--annotations", "--input", "--dataset"):
        if any(t == flag or t.startswith(flag + "=") for t in argv):
            raise UsageError(f"{flag} is set by run itself (the stage before, under --output)")
    given = options_of.parse("run", argv, __doc__)
    output = given.output
    if not given.source or not output:
        raise UsageError("--source and --output are required")
    wanted = [s.strip() for s in given.stages.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in FOLDERS]
    if unknown or not wanted:
        raise UsageError(
            f"--stages: {', '.join(unknown) or 'none given'}; choose from " + ", ".join(FOLDERS)
        )
    split = split_flags(argv)
    pubmed = any(name in PUBMED_SOURCES for name, _ in split)
    if not pubmed:
        wanted = [s for s in wanted if s != "enrich"]
        enrich_only = set(_actions(options_of.OPTIONS_OF["enrich"])) - set(
            _actions([options_of.InputOptions, options_of.RunOptions, options_of.AllowEmpty])
        )
        stray = sorted({name for name, _ in split if name in enrich_only})
        if stray:
            raise UsageError(f"{', '.join(stray)}: enrich runs only with --medline or --eutils")
    articles = storage.join(output, FOLDERS["enrich" if pubmed else "extract"])
    wiring = {
        "extract": ["--output", storage.join(output, FOLDERS["extract"])],
        "enrich": [
            "--input",
            storage.join(output, FOLDERS["extract"]),
            "--output",
            storage.join(output, FOLDERS["enrich"]),
        ],
        "embed": ["--input", articles, "--output", storage.join(output, FOLDERS["embed"])],
        "annotate": [
            "--input",
            articles,
            "--embeddings",
            storage.join(output, FOLDERS["embed"]),
            "--output",
            storage.join(output, FOLDERS["annotate"]),
        ],
        "shard": [
            "--input",
            articles,
            "--output",
            storage.join(output, FOLDERS["shard"]),
            *(
                ["--annotations", storage.join(output, FOLDERS["annotate"])]
                if "annotate" in wanted
                else []
            ),
        ],
        "index": [
            "--dataset",
            storage.join(output, FOLDERS["shard"]),
            "--embeddings",
            storage.join(output, FOLDERS["embed"]),
            "--output",
            storage.join(output, FOLDERS["index"]),
        ],
    }
    steps = [(stage, [*wiring[stage], *stage_argv(stage, split)]) for stage in wanted]
    refuse_overlap(output, source=given.source)
    if given.since:
        refuse_overlap(output, since=given.since)
        steps = incremental(steps, given, split)
    return output, steps, given


def earlier_run(since: str) -> dict:
    """The report of the run --since names, which must have finished and balanced."""
    uri = storage.join(since, REPORT)
    try:
        earlier = json.loads(storage.read_bytes(uri, max_bytes=1 << 24))
    except (storage.StorageError, ValueError) as err:
        raise UsageError(f"--since {since}: no finished run there ({uri}: {err})") from None
    if earlier.get("pipeline") != "run" or not earlier.get("balanced"):
        raise UsageError(f"--since {since}: not a finished, balanced `biomedica run` output")
    if not earlier.get("watermark"):
        raise UsageError(f"--since {since}: its report names no watermark (it took no version)")
    return earlier


def incremental(steps, given, split) -> list[tuple[str, list[str]]]:
    """The steps of a --since run: extract from the earlier watermark on, annotate with the
    earlier clustering model (unless the flags name another)."""
    if any(name == "--modified_since" for name, _ in split):
        raise UsageError("--since sets --modified_since (to the earlier run's watermark)")
    earlier = earlier_run(given.since)
    named = {name for name, _ in split}
    model = storage.join(given.since, FOLDERS["annotate"], CLUSTER_MODEL)
    out = []
    for stage, argv in steps:
        if stage == "extract":
            argv = [*argv, "--modified_since", _after(earlier["watermark"])]
        if stage == "annotate" and "--cluster_model" not in named:
            if not storage.exists(model):
                raise UsageError(f"--since: {model} is missing (pass --cluster_model)")
            argv = [*argv, "--cluster_model", model]
        out.append((stage, argv))
    return out


def run(argv=None) -> dict:
    """Run the stages in order; returns the gathered report (also written and printed)."""
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    output, steps, given = plan(argv)
    earlier = earlier_run(given.since) if given.since else None
    started = time.time()
    gathered = {"pipeline": "run", "output": output, "stages": {}}
    with output_lock(output), waiting_for_jobs():
        prepare_output(output, REPORT, given.overwrite, [REPLACES])
        for stage, stage_args in steps:
            module = importlib.import_module(MODULES[stage])
            print(
                f"biomedica run: {stage} -> {stage_args[stage_args.index('--output') + 1]}",
                file=sys.stderr,
                flush=True,
            )
            result = module.run(stage_args)
            folder = storage.join(output, FOLDERS[stage])
            if stage == "extract":
                gathered["watermark"] = _watermark(folder, earlier)
            gathered["stages"][stage] = {
                "output": folder,
                "balanced": bool(result.get("balanced")),
                "report": storage.join(folder, REPORT),
                "wall_seconds": result.get("wall_seconds"),
                **({"error": result["error"]} if result.get("error") else {}),
            }
            if result.get("error") or not (result.get("balanced") or result.get("submitted")):
                why = result.get("error") or "its report does not balance"
                gathered["error"] = f"{stage}: {why}"
                break
            if stage == "extract" and result.get("note"):  # --since: nothing new
                gathered["note"] = result["note"]
                break
        if earlier is not None and "error" not in gathered:
            gathered["since"] = since_summary(given.since, earlier, output, gathered)
        gathered["balanced"] = "error" not in gathered and all(
            s["balanced"] for s in gathered["stages"].values()
        )
        gathered["wall_seconds"] = round(time.time() - started, 2)
        _where(gathered, output)
        storage.write_bytes(
            storage.join(output, REPORT),
            (json.dumps(gathered, indent=2, sort_keys=True) + "\n").encode(),
        )
    print(json.dumps(gathered, indent=2, sort_keys=True))
    return gathered


def _after(watermark: str) -> str:
    """The second after a watermark: --modified_since is inclusive, and the versions of that
    very second were the earlier run's (LastModified counts whole seconds)."""
    from datetime import datetime, timedelta

    moment = datetime.strptime(watermark, "%Y-%m-%dT%H:%M:%SZ") + timedelta(seconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _watermark(extract_output: str, earlier: dict | None) -> str:
    """The newest LastModified this run took, or the earlier run's where it took none new."""
    newest = ""
    uri = storage.join(extract_output, WATERMARK)
    if storage.exists(uri):
        newest = json.loads(storage.read_bytes(uri)).get("last_modified", "")
    if earlier is not None:
        newest = max(newest, earlier["watermark"])
    return newest


def since_summary(since: str, earlier: dict, output: str, gathered: dict) -> dict:
    """What an incremental run skipped as unchanged, and the earlier samples its new versions
    replace (written to replaces.parquet). `earlier`: the report of the run --since names."""
    extract = json.loads(storage.read_bytes(storage.join(output, FOLDERS["extract"], REPORT)))
    discover = extract.get("stages", {}).get("discover", {})
    skipped = discover.get("filtered_by_reason", {}).get("modified_before_window", 0)
    summary = {
        "from": since,
        "watermark": earlier["watermark"],
        "skipped_unchanged": skipped,
        "replaces": storage.join(output, REPLACES),
    }
    if "extract" not in gathered["stages"] or gathered.get("note"):
        summary["replaced_samples"] = 0
        return summary
    dataset = earlier["stages"].get("shard", {}).get("output")
    articles = storage.join(output, FOLDERS["extract"], "extract", "articles")
    table = replaced.replaced_samples(dataset, articles) if dataset else replaced.empty()
    write_parquet(storage.join(output, REPLACES), table)
    summary["replaced_samples"] = table.num_rows
    return summary


def _where(gathered: dict, output: str) -> None:
    """Where a user finds the dataset, its card and the gallery."""
    stages = gathered["stages"]
    if "shard" in stages:
        dataset = stages["shard"]["output"]
        gathered["dataset"] = storage.join(dataset, "webdataset")
        gathered["card"] = storage.join(dataset, "README.md")
    if "index" in stages:
        gathered["index"] = stages["index"]["output"]
    if "annotate" in stages:
        gathered["gallery"] = storage.join(stages["annotate"]["output"], "gallery", "index.html")


main = main_of(run, "run")


if __name__ == "__main__":
    sys.exit(main())
