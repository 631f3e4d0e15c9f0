"""What every pipeline entry point shares: a runner that needs no download, output checks."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from transforms import storage


def make_pipeline(options: PipelineOptions, test_pipeline=None) -> beam.Pipeline:
    """The injected test pipeline, the runner named by --runner, or the in-process runner.

    Beam's DirectRunner first tries to download the Prism runner; without --runner we go
    straight to the in-process FnApiRunner that the DirectRunner falls back to, which honours
    --direct_running_mode and --direct_num_workers.
    """
    if test_pipeline is not None:
        return test_pipeline
    if options.view_as(StandardOptions).runner:
        return beam.Pipeline(options=options)
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return beam.Pipeline(runner=FnApiRunner(), options=options)


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


def run_and_report(p: beam.Pipeline, output: str, started: float, cleanup=()) -> dict:
    """Run a built pipeline, remove its work folders, print and return its run report.

    On Dataflow the launcher does not wait (a Flex Template launcher should end once the job
    is submitted): the job writes its own run report; its work folders stay until removed.
    """
    import json
    import time

    from transforms import report

    result = p.run()
    if "Dataflow" in str(p.options.view_as(StandardOptions).runner or ""):
        submitted = {
            "submitted": True,
            "balanced": True,
            "report": storage.join(output, REPORT),
            "job_id": getattr(result, "job_id", lambda: None)(),
        }
        print(json.dumps(submitted, indent=2))
        return submitted
    result.wait_until_finish()
    for folder in cleanup:
        storage.remove_tree(storage.join(output, folder))
    result = report.read_report(storage.join(output, REPORT))
    result["wall_seconds"] = round(time.time() - started, 2)
    print(json.dumps(result, indent=2, sort_keys=True))
    return result


def main_of(run):
    """The console entry of a pipeline: exit status 0 only when its report balances."""

    def main(argv=None) -> int:
        import sys

        logging.getLogger().setLevel(logging.WARNING)
        result = run(sys.argv[1:] if argv is None else argv)
        return 0 if result.get("balanced") or result.get("submitted") else 1

    return main
