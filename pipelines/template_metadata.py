"""A Flex Template's metadata, made from a pipeline's options classes (never by hand):
deploy/dataflow/make_metadata.py writes one file per pipeline of pipelines.options.OPTIONS_OF.

Each parameter is one flag of the pipeline: its name (the flag without `--`), a label, the
flag's help as `--help` shows it (default included), whether a run can do without it, and
a regex where the flag's type says what a value looks like. The first parameter,
`pipeline`, is the template's own: it admits the pipeline's name only (see
pipelines.flex_template). Beam's and Dataflow's own options (runner, project, region,
temp_location, staging_location, sdk_container_image, machine type, experiments...) are no
template parameters: Dataflow sets them from the launch request (gcloud's --region,
--temp-location, --worker-machine-type, --additional-experiments, ...), and a launch passes
the others it needs as parameters of those names.
"""

from __future__ import annotations

import argparse
import json

from pipelines import flags
from pipelines.options import OPTIONS_OF, SIGNED

# Flags a run refuses to start without (tests/test_dataflow_deploy.py proves it for each
# pipeline that has them).
REQUIRED = frozenset({"source", "input", "output", "embeddings", "where", "dataset"})
PIPELINE_PARAMETER = "pipeline"
REPEAT_NOTE = "Several: separate them with commas."


def option_actions(pipeline: str) -> list[argparse.Action]:
    """The pipeline's own flags in `--help` order, each help ending with its default."""
    parser = argparse.ArgumentParser(add_help=False)
    for cls in OPTIONS_OF[pipeline]:
        cls._add_argparse_args(parser)
    flags._with_defaults(parser)
    return [a for a in parser._actions if a.option_strings]


def name_of(action: argparse.Action) -> str:
    return action.option_strings[-1].removeprefix("--")


def regexes(action: argparse.Action) -> list[str]:
    """What a value must look like, where the flag's type or choices say (Java and RE2
    syntax alike, which Dataflow's validation uses)."""
    if isinstance(action, argparse._StoreTrueAction):
        return ["^(true|false)$"]
    if action.choices:
        alternatives = "|".join(str(c) for c in action.choices)
        upper = action.type is str.upper  # the flag takes any case
        return [f"{'(?i)' if upper else ''}^({alternatives})$"]
    if action.type is int:
        return ["^-?[0-9]+$" if set(action.option_strings) & SIGNED else "^[0-9]+$"]
    if action.type is float:
        return ["^[0-9]+([.][0-9]*)?$"]
    return []


def label_of(name: str) -> str:
    words = name.replace("_", " ")
    return words[:1].upper() + words[1:]


def help_of(action: argparse.Action) -> str:
    text = " ".join((action.help or "").split())
    if isinstance(action, argparse._StoreTrueAction):
        return f"{text} (true or false)"
    if isinstance(action, argparse._AppendAction):
        return f"{text}. {REPEAT_NOTE}"
    return text


def description_of(pipeline: str) -> str:
    """The first paragraph of the pipeline module's docstring, on one line."""
    import importlib

    doc = importlib.import_module(f"pipelines.{pipeline}").__doc__ or f"biomedica {pipeline}"
    return " ".join(doc.strip().split("\n\n")[0].split()).replace("`", "")


def parameter(action: argparse.Action) -> dict:
    name = name_of(action)
    entry = {
        "name": name,
        "label": label_of(name),
        "helpText": help_of(action),
        "isOptional": name not in REQUIRED,
    }
    found = regexes(action)
    if found:
        entry["regexes"] = found
    return entry


def metadata(pipeline: str) -> dict:
    """The template metadata of one pipeline (a JSON-ready dict)."""
    chooser = {
        "name": PIPELINE_PARAMETER,
        "label": "Pipeline",
        "helpText": f"the pipeline this template runs: {pipeline} (the image holds them all)",
        "isOptional": False,
        "regexes": [f"^{pipeline}$"],
    }
    return {
        "name": f"biomedica-{pipeline}",
        "description": description_of(pipeline),
        "parameters": [chooser, *(parameter(a) for a in option_actions(pipeline))],
    }


def metadata_text(pipeline: str) -> str:
    """The file's exact text (two-space indent, a final newline)."""
    return json.dumps(metadata(pipeline), indent=2, ensure_ascii=False) + "\n"
