"""What every pipeline entry point shares: a runner that needs no download, output checks,
one lock per output, progress, and one clear line (and exit status) for whatever goes wrong."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)

from pipelines import options as options_of
from pipelines.flags import UsageError, log_level
from pipelines.options import InputOptions, RunOptions
from transforms import extract_layout, storage
from transforms import progress as progress_lines
from transforms.run_lock import LockError, RunLock


def make_pipeline(options: PipelineOptions, test_pipeline=None) -> beam.Pipeline:
    """The injected test pipeline, the runner named by --runner, or the in-process runner.

    Beam's DirectRunner first tries to download the Prism runner; without --runner we go
    straight to the in-process FnApiRunner that the DirectRunner falls back to, which honours
    --direct_running_mode and --direct_num_workers.
    """
    if test_pipeline is not None:
        return test_pipeline
    runner = options.view_as(StandardOptions).runner
    if isinstance(runner, str) and runner.strip().lower() in DASK_RUNNER_NAMES:
        # Beam's own DaskRunner runs only part of a graph like ours (pipelines.dask_runner).
        from pipelines.dask_runner import DaskRunner

        return beam.Pipeline(runner=DaskRunner(), options=options)
    if runner:
        return beam.Pipeline(options=options)
    return beam.Pipeline(runner=_runner(), options=options)


DASK_RUNNER_NAMES = ("dask", "daskrunner", "apache_beam.runners.dask.dask_runner.daskrunner")


def _runner():
    """The FnApiRunner, with --direct_running_mode multi_processing workers that end
    quietly on Ctrl-C instead of each printing a traceback: each runs in the background of
    a shell (so ignores SIGINT, and Python keeps that), which ends it with SIGTERM (no
    traceback) when Ctrl-C reaches the shell; the launcher reports it in one line."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    class Runner(FnApiRunner):
        @property
        def _default_environment(self):
            return self._environment

        @_default_environment.setter
        def _default_environment(self, environment):
            command = getattr(environment, "command_string", "")
            if isinstance(environment, SubprocessSDKEnvironment) and command.endswith(
                "-m apache_beam.runners.worker.sdk_worker_main"
            ):
                environment = SubprocessSDKEnvironment.from_command_string(
                    f"{command} & pid=$!; trap 'kill -TERM $pid' INT TERM; wait $pid; s=$?; "
                    "[ $s -gt 128 ] && wait $pid 2>/dev/null; exit $s"
                )
            self._environment = environment

    return Runner()


def prepare_output(output: str, marker: str, overwrite: bool, subdirs: list[str]) -> None:
    """Refuse to mix two runs in one output unless asked; clear what an older run left.

    Without the marker a previous run never finished: its leftovers go too.
    """
    marker_uri = storage.join(output, marker)
    finished = storage.exists(marker_uri)
    if finished and not overwrite:
        raise SystemExit(
            f"{output} already holds a run ({marker} exists); pass --overwrite to replace it"
        )
    for sub in [*subdirs, marker]:
        storage.remove(storage.join(output, sub))
    if finished:
        logging.info("cleared the previous run in %s", output)


REPORT = "run_report.json"


def input_layout(
    source: str, s3: storage.S3Config = storage.S3Config()
) -> extract_layout.Layout | None:
    """The tables of an --input output folder: an extract output's own, or an enrich
    output's articles beside the figures its link names (checked fresh); None for a figure
    file or glob. A stale or unreadable link ends the run here, in one line."""
    if not extract_layout.is_output_folder(source):
        return None
    try:
        return extract_layout.layout(source, s3)
    except extract_layout.LinkError as err:
        raise SystemExit(str(err)) from None


def figure_files(source: str) -> str:
    """The Parquet glob of an extract (or enrich) output folder, or the glob itself."""
    found = input_layout(source)
    return source if found is None else found.figure_glob


def refuse_linked_overlap(output: str, source: str) -> None:
    """An --output that is, holds or lies in the figures an enrich --input links to (in
    another folder) would delete or mix into them, as it would an --input."""
    found = input_layout(source)
    if found is None or not found.linked:
        return
    try:
        refuse_overlap(output, input=found.figures)
    except UsageError:
        raise UsageError(
            f"--output {output} overlaps {found.figures}, the figures --input {source} links "
            "to; write to a folder outside it"
        ) from None


def figure_inputs(pattern: str, allow_empty: bool, empty: str) -> list[storage.FileInfo]:
    """The figure files a job reads. None is an error (an extract that found nothing new
    writes none) unless --allow_empty, which then writes `empty` (an empty dataset, ...)."""
    files = storage.glob(pattern)
    if not files and not allow_empty:
        raise SystemExit(
            f"no figure files at {pattern}: the input holds no figure sample (an extract that "
            f"found nothing new writes none); pass --allow_empty to write {empty}"
        )
    return files


def nothing_selected(result: dict, stage: str, why: str, allow_empty: bool) -> dict:
    """A run that wrote no sample says so, and fails unless --allow_empty."""
    out = result.get("stages", {}).get(stage, {}).get("out")
    if out == 0 and not result.get("submitted"):
        message = f"nothing written: {why}"
        if allow_empty:
            pipeline = result.get("pipeline", stage)
            print(f"biomedica {pipeline}: {message} (--allow_empty)", file=sys.stderr)
        else:
            result["error"] = f"{message}; pass --allow_empty if that is expected"
    return result


def job_options(pipeline: str, argv: list[str], description: str):
    """What every job that reads --input and writes --output does first: strict flags (see
    pipelines.options.parse), both paths given and apart (the figures an enrich output
    links to included). (the parsed flags, Beam's options, RunOptions' view, --input)."""
    given = options_of.parse(pipeline, argv, description)
    options = PipelineOptions(argv)
    opts = options.view_as(RunOptions)
    source = options.view_as(InputOptions).input
    if not source or not opts.output:
        raise UsageError("--input and --output are required")
    refuse_overlap(opts.output, input=source)
    refuse_linked_overlap(opts.output, source)
    options.view_as(SetupOptions).save_main_session = False
    return given, options, opts, source


def _location(uri: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(scheme or "", path parts of the fixed folder, the glob's own parts or ())."""
    uri = uri.strip()
    cut = min([uri.index(c) for c in "*?[" if c in uri] or [len(uri)])
    fixed, pattern = uri, ""
    if cut < len(uri):  # a glob: its folder part is fixed, the rest a pattern
        slash = uri.rfind("/", 0, cut)
        fixed, pattern = (uri[:slash], uri[slash + 1 :]) if slash >= 0 else ("", uri)
    if "://" in fixed:
        scheme, rest = fixed.split("://", 1)
        parts = tuple(p for p in rest.split("/") if p)
    else:
        scheme = ""
        parts = tuple(p for p in os.path.realpath(fixed or ".").split(os.sep) if p)
    return scheme.lower(), parts, tuple(p for p in pattern.split("/") if p)


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether a path below a glob's folder could be (or hold) what the glob matches."""
    import fnmatch

    if "**" in pattern:
        return True  # any depth: assume the worst
    head = parts[: len(pattern)]
    return all(fnmatch.fnmatchcase(p, q) for p, q in zip(head, pattern, strict=False))


def refuse_overlap(output: str, **inputs: str) -> None:
    """An output that is, holds or lies in an input would delete or mix into that input.
    A glob's folder may hold the output beside the files it matches."""
    out_scheme, out_parts, _ = _location(output)
    for flag, uri in inputs.items():
        if not uri:
            continue
        scheme, parts, pattern = _location(uri)
        if scheme != out_scheme:
            continue
        shorter = min(len(parts), len(out_parts))
        if parts[:shorter] != out_parts[:shorter]:
            continue
        if pattern and len(out_parts) > len(parts):
            if not _matches(out_parts[len(parts) :], pattern):
                continue
        if parts == out_parts:
            where = "contains" if pattern else "is"
        else:
            where = "lies inside" if len(out_parts) > len(parts) else "contains"
        raise UsageError(f"--output {output} {where} --{flag} {uri}; write to a folder outside it")


@contextlib.contextmanager
def output_lock(output: str, run_id: str | None = None):
    """Hold the output for a run (transforms.run_lock); a refusal is one clear line.

    `run_id`: the id the pipeline's final moves were built to check (run_lock.Guard)."""
    lock = RunLock(output, run_id=run_id)
    try:
        lock.acquire()
    except LockError as err:
        raise SystemExit(str(err)) from None
    try:
        yield lock
    finally:
        lock.release()


def progress(level: str, label: str, units: list[str], total: int | None = None):
    """What run_and_report shows while a local run lasts (None: quiet)."""
    if str(level).upper() == "ERROR":
        return None
    return (label, units, total)


# Whether a job submitted to Dataflow is awaited: `biomedica run` awaits each stage's job,
# since the next stage reads what it writes (see waiting_for_jobs).
_WAIT_FOR_JOBS = False


@contextlib.contextmanager
def waiting_for_jobs():
    """Within: run_and_report waits for a Dataflow job to finish and reads its report."""
    global _WAIT_FOR_JOBS
    before, _WAIT_FOR_JOBS = _WAIT_FOR_JOBS, True
    try:
        yield
    finally:
        _WAIT_FOR_JOBS = before


def run_and_report(
    p: beam.Pipeline,
    output: str,
    started: float,
    cleanup=(),
    lock: RunLock | None = None,
    shown=None,
) -> dict:
    """Run a built pipeline, remove its work folders, print and return its run report.

    `shown` (from `progress`) prints progress on stderr while a local run lasts. The lock
    is checked again before the work folders go: a run that lost it must not delete them.
    On Dataflow the launcher does not wait (a Flex Template launcher should end once the job
    is submitted): the job writes its own run report; its work folders stay until removed.
    """
    import json
    import time

    from transforms import report

    dataflow = "Dataflow" in str(p.options.view_as(StandardOptions).runner or "")
    # Awaited (biomedica run), a job is reported as any other run; a dry run has no job.
    dry_run = bool(p.options.view_as(TestOptions).dry_run)
    dataflow = dataflow and (not _WAIT_FOR_JOBS or dry_run)
    reporter = None
    if shown and not dataflow:
        reporter = progress_lines.Reporter(*shown).start()
    try:
        result = p.run()
        if not dataflow:
            result.wait_until_finish()
    except BaseException:  # Ctrl-C included: leave no work folders behind, if still ours
        if lock is not None and not dataflow:
            _remove_work(output, cleanup, lock)
        raise
    finally:
        if reporter is not None:
            reporter.stop(print_last=sys.exc_info()[0] is None)
    if dataflow:
        submitted = {
            "submitted": True,
            "balanced": True,
            "report": storage.join(output, REPORT),
            "job_id": getattr(result, "job_id", lambda: None)(),
        }
        print(json.dumps(submitted, indent=2))
        return submitted
    if lock is not None:
        lock.check()
    for folder in cleanup:
        storage.remove_tree(storage.join(output, folder))
    result = report.read_report(storage.join(output, REPORT))
    result["wall_seconds"] = round(time.time() - started, 2)
    print(json.dumps(result, indent=2, sort_keys=True))
    return result


def _remove_work(output: str, cleanup, lock: RunLock) -> None:
    """After a failed or interrupted run: its work folders go, unless another run owns the
    output now (then they may be that run's). The next run clears them in any case."""
    try:
        lock.check()
        for folder in cleanup:
            storage.remove_tree(storage.join(output, folder))
    except BaseException as err:  # the run's own failure is what the user must see
        logging.debug("work folders left in %s: %s", output, err)


def _in_chain(err: BaseException, kind: type) -> BaseException | None:
    """The first `kind` among `err` and its causes: Beam wraps a worker's error in its own."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _interrupted(err: BaseException) -> bool:
    """Ctrl-C as Beam's in-process runner re-raises it: a RuntimeError whose cause is the
    KeyboardInterrupt, or (from a worker thread) whose message alone names it."""
    if _in_chain(err, KeyboardInterrupt) is not None:
        return True
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return bool(lines) and (
        lines[0].startswith("KeyboardInterrupt") or lines[-1].startswith("KeyboardInterrupt")
    )


def _wrapper(err: BaseException) -> bool:
    """Beam re-raises a worker's error with its traceback in the message: not the cause."""
    text = str(err)
    return not text.strip() or "Traceback (most recent call last)" in text


def _one_line(err: BaseException) -> str:
    """The error itself on one line: the first in its chain that is not a Beam wrapper."""
    seen = set()
    while _wrapper(err) and id(err) not in seen:
        seen.add(id(err))
        inner = err.__cause__ or err.__context__
        if inner is None:
            break
        err = inner
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror + (f": {err.filename}" if err.filename else "")
    else:
        text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text:
        # No cleaner error in the chain: the traceback's last line names the error.
        lines = [line for line in lines if not line.startswith(("File ", "Traceback"))][-1:]
    first = (lines[0] if lines else type(err).__name__).split(" [while running", 1)[0]
    if not first.startswith(type(err).__name__) and ":" not in first[:40]:
        first = f"{type(err).__name__}: {first}"
    return first if len(first) < 300 else first[:300] + "..."


def _quiet_interrupted_workers(level: str) -> None:
    """On Ctrl-C each multi_processing worker ends (130: SIGINT, 143: SIGTERM, see _runner)
    and Beam's thread watching it raises: the launcher's one line says it all."""
    import threading

    previous = threading.excepthook

    def hook(args):
        text = str(args.exc_value)
        if level != "DEBUG" and text.startswith("Worker subprocess exited with return code"):
            if text.rsplit(" ", 1)[-1] in ("130", "143", "-2", "-15"):
                return
        # The thread reading a worker's control stream dies with the worker's channel; what
        # ended the run is reported by the launcher (interrupted, or the failure itself).
        name = getattr(args.thread, "name", "") or ""
        if (
            level != "DEBUG"
            and name.startswith("beam_")
            and "RpcError" in type(args.exc_value).__name__
        ):
            return
        previous(args)

    threading.excepthook = hook


def main_of(run, pipeline: str = ""):
    """The console entry of a pipeline: exit status 0 only when its report balances.

    Whatever goes wrong ends in one line on stderr (`biomedica extract: error: ...`) and a
    non-zero status: 2 for flags, 130 for Ctrl-C, 1 otherwise; --log_level DEBUG adds the
    traceback.
    """
    prog = f"biomedica {pipeline}".strip()

    def main(argv=None) -> int:
        argv = sys.argv[1:] if argv is None else list(argv)
        level = log_level(argv)
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(level if level in logging._nameToLevel else "WARNING")
        if level != "DEBUG":
            # Beam logs a failed bundle's traceback at ERROR before it raises; the raise is
            # reported below in one line. Its warnings stay.
            for handler in logging.getLogger().handlers:
                handler.addFilter(
                    lambda r: not (r.name.startswith("apache_beam") and r.levelno >= logging.ERROR)
                )

        def say(message: str, hint: bool = False) -> None:
            more = " (--log_level DEBUG shows the traceback)" if hint and level != "DEBUG" else ""
            sys.stdout.flush()
            print(f"{prog}: error: {message}{more}", file=sys.stderr, flush=True)

        _quiet_interrupted_workers(level)
        try:
            result = run(argv)
        except UsageError as err:
            say(err.message)
            return 2
        except KeyboardInterrupt:
            sys.stdout.flush()
            print(f"{prog}: interrupted", file=sys.stderr, flush=True)
            return 130
        except SystemExit as err:
            if isinstance(err.code, str):
                say(err.code.removeprefix(f"{prog}: "))
                return 1
            raise
        except Exception as err:
            logging.debug("traceback", exc_info=True)
            if _interrupted(err):
                sys.stdout.flush()
                print(f"{prog}: interrupted", file=sys.stderr, flush=True)
                return 130
            lost = _in_chain(err, LockError)
            if lost is not None:  # another run owns the output now: nothing more to say
                say(str(lost).split(" [while running", 1)[0])
                return 1
            say(_one_line(err), hint=True)
            return 1
        if result.get("error"):
            say(result["error"])
            return 1
        return 0 if result.get("balanced") or result.get("submitted") else 1

    return main
