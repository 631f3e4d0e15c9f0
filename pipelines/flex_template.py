"""The Dataflow Flex Template entry: one image, every pipeline; the `pipeline` parameter
picks which.

    python pipelines/flex_template.py --pipeline=embed --input=gs://b/run --output=... \\
        --runner=DataflowRunner --project=... --region=... [launcher flags]

Google's Python launcher runs the file FLEX_TEMPLATE_PYTHON_PY_FILE names (an image-wide
environment variable: a template spec cannot set one), passing each launch parameter as
`--name=value`, Dataflow's own options among them. So the image holds one entry, and each
pipeline's template (deploy/dataflow/metadata/<pipeline>.json) declares a `pipeline`
parameter that admits its name only. The entry turns the launcher's form into the
pipeline's own flags (`launch_argv`) and runs that pipeline's console entry, which submits
the job and returns without waiting (pipelines.runner.run_and_report), as a launcher must.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

PARAMETER = "pipeline"
ENV = "BIOMEDICA_PIPELINE"  # a fallback for images built for one pipeline
SEPARATOR = ","  # a repeatable flag's values in one template parameter


def pipelines() -> list[str]:
    """The pipelines a template can run: every Beam job with an options entry."""
    from pipelines.options import OPTIONS_OF

    return list(OPTIONS_OF)


def _actions(pipeline: str) -> dict[str, argparse.Action]:
    from pipelines.options import OPTIONS_OF

    parser = argparse.ArgumentParser(add_help=False)
    for cls in OPTIONS_OF[pipeline]:
        cls._add_argparse_args(parser)
    return {o: a for a in parser._actions for o in a.option_strings}


def _truth(flag: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes", ""):
        return True
    if text in ("false", "0", "no"):
        return False
    raise SystemExit(f"{flag}={value}: a switch is true or false")


def split_pipeline(argv: list[str], env: dict | None = None) -> tuple[str, list[str]]:
    """(the pipeline named by --pipeline, or by $BIOMEDICA_PIPELINE; the other args)."""
    env = os.environ if env is None else env
    name, rest, args = None, [], iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag == f"--{PARAMETER}":
            name = value if eq else next(args, "")
        else:
            rest.append(arg)
    name = (name or env.get(ENV, "")).strip()
    if name not in pipelines():
        known = ", ".join(pipelines())
        raise SystemExit(f"biomedica template: --{PARAMETER} {name or '(none)'}: one of {known}")
    return name, rest


def launch_argv(pipeline: str, argv: list[str]) -> list[str]:
    """The launcher's `--name=value` args as the pipeline's flags: a switch's `=true` is
    the bare flag and `=false` drops it; a repeatable flag's comma list is one flag a value.
    Anything else (Beam's and Dataflow's options) passes as it came; --runner is Dataflow's
    unless given."""
    actions = _actions(pipeline)
    out: list[str] = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        action = actions.get(flag)
        if not eq or action is None:
            out.append(arg)
        elif isinstance(action, argparse._StoreTrueAction):
            if _truth(flag, value):
                out.append(flag)
        elif isinstance(action, argparse._AppendAction):
            out += [f"{flag}={v.strip()}" for v in value.split(SEPARATOR) if v.strip()]
        else:
            out.append(arg)
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in out):
        # A template job runs on Dataflow: without this Beam would run it on the launcher VM.
        out.append("--runner=DataflowRunner")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        pipeline, rest = split_pipeline(argv)
        args = launch_argv(pipeline, rest)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    module = importlib.import_module(f"pipelines.{pipeline}")
    return module.main(args) or 0


if __name__ == "__main__":
    # Run as a file (the launcher's way), Python puts pipelines/ first on the path, where
    # options.py or flags.py could stand in for a library's module of that name: the
    # package is imported from where it is installed instead.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    sys.exit(main())
