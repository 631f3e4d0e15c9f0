"""Dataflow, as far as it can be proven without Google Cloud: the template metadata is the
pipelines' own flags, the template entry turns launcher parameters into those flags, the
Dockerfile and build_and_run.sh name what exists, the embed stage carries its GPU hint,
and every pipeline's graph translates into a Dataflow job (DataflowRunner's dry run: the
job and its pipeline proto are built, nothing is submitted, no credentials are read)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import apache_beam as beam
import pytest

from pipelines import flags, flex_template, template_metadata
from pipelines.options import OPTIONS_OF, parse
from transforms.embed import accelerator as gpu

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "dataflow"
METADATA = DEPLOY / "metadata"
SCRIPT = DEPLOY / "build_and_run.sh"
HINT = "type:nvidia-l4;count:1;machine_type:g2-standard-4;install-nvidia-driver"
ACCELERATOR_URN = "beam:resources:accelerator:v1"


def committed(pipeline: str) -> dict:
    return json.loads((METADATA / f"{pipeline}.json").read_text())


def options_of(pipeline: str) -> dict[str, argparse.Action]:
    return {template_metadata.name_of(a): a for a in template_metadata.option_actions(pipeline)}


def beam_flags() -> set[str]:
    return {o.removeprefix("--") for a in flags._beam_parser()._actions for o in a.option_strings}


def metadata_script():
    """deploy/dataflow/make_metadata.py, loaded from its file (it is no package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_metadata", DEPLOY / "make_metadata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line(text: str | None) -> str:
    return " ".join((text or "").split())


# ---- metadata: generated, complete, nothing but real options -----------------------------


def test_committed_metadata_is_what_the_script_generates():
    make_metadata = metadata_script()
    want = make_metadata.expected()
    assert sorted(want) == sorted(f"{name}.json" for name in OPTIONS_OF)
    assert make_metadata.drift(want) == [], "run python deploy/dataflow/make_metadata.py"
    assert make_metadata.main(["--check"]) == 0


def test_drift_is_reported(tmp_path, monkeypatch):
    make_metadata = metadata_script()
    for path in METADATA.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(make_metadata, "FOLDER", tmp_path)
    want = make_metadata.expected()
    edited = json.loads((tmp_path / "embed.json").read_text())
    edited["parameters"] = edited["parameters"][:-1]
    (tmp_path / "embed.json").write_text(json.dumps(edited))
    (tmp_path / "gone.json").write_text("{}")
    (tmp_path / "shard.json").unlink()
    assert make_metadata.drift(want) == [
        "missing: shard.json",
        "stale: gone.json",
        "differs: embed.json",
    ]


@pytest.mark.parametrize("pipeline", list(OPTIONS_OF))
def test_every_option_is_a_parameter_with_its_help(pipeline):
    meta = committed(pipeline)
    params = {p["name"]: p for p in meta["parameters"]}
    assert len(params) == len(meta["parameters"]), "a parameter given twice"
    options = options_of(pipeline)
    chooser = params.pop(template_metadata.PIPELINE_PARAMETER)
    assert chooser["isOptional"] is False and chooser["regexes"] == [f"^{pipeline}$"]
    assert set(params) == set(options), "parameters and options differ"
    for name, param in params.items():
        action = options[name]
        assert f"--{name}" in action.option_strings
        assert param["helpText"].startswith(one_line(action.help)), name
        assert param["label"] and param["isOptional"] == (name not in template_metadata.REQUIRED)
    assert not beam_flags() & set(params), "a Beam flag made a template parameter"


@pytest.mark.parametrize("pipeline", list(OPTIONS_OF))
def test_parameter_regexes_agree_with_the_flags(pipeline):
    options = options_of(pipeline)
    for param in committed(pipeline)["parameters"]:
        name = param["name"]
        if name == template_metadata.PIPELINE_PARAMETER or "regexes" not in param:
            continue
        (pattern,) = param["regexes"]
        matches = re.compile(pattern).fullmatch
        action = options[name]
        if isinstance(action, argparse._StoreTrueAction):
            assert matches("true") and matches("false") and not matches("yes please")
            continue
        samples = [str(c) for c in action.choices or []] or ["0", "12", "-1", "1.5", "x1"]
        if action.default not in (None, ""):
            samples.append(str(action.default))
        for value in [*samples, "bogus"]:
            try:
                parse(pipeline, [f"--{name}", value])
                accepted = True
            except flags.UsageError:
                accepted = False
            if isinstance(action.type, type) or action.choices:
                assert bool(matches(value)) == accepted, (name, value)


def test_required_parameters_are_refused_when_missing(tmp_path, capsys):
    """isOptional false means a run without it stops at once (exit 2, naming it)."""
    from pipelines import cli

    checked = 0
    for pipeline in OPTIONS_OF:
        required = [
            p["name"]
            for p in committed(pipeline)["parameters"]
            if not p["isOptional"] and p["name"] != template_metadata.PIPELINE_PARAMETER
        ]
        for missing in required:
            argv = [
                a
                for name in required
                if name != missing
                for a in (f"--{name}", "x > 1" if name == "where" else str(tmp_path / name))
            ]
            code = cli.main([pipeline, *argv]) if pipeline in cli.PIPELINES else None
            if code is None:
                continue
            err = capsys.readouterr().err
            assert code == 2 and f"--{missing}" in err, (pipeline, missing, err)
            checked += 1
    assert checked >= 10


# ---- the template entry ----------------------------------------------------------------


def test_the_pipeline_parameter_picks_the_pipeline():
    assert flex_template.split_pipeline(["--pipeline=embed", "--input=x"], {}) == (
        "embed",
        ["--input=x"],
    )
    assert flex_template.split_pipeline(["--pipeline", "shard"], {}) == ("shard", [])
    assert flex_template.split_pipeline([], {flex_template.ENV: "enrich"}) == ("enrich", [])
    for bad in (["--pipeline=sample"], ["--pipeline=emb"], []):
        with pytest.raises(SystemExit, match="one of extract"):
            flex_template.split_pipeline(bad, {})


def test_launcher_parameters_become_the_pipelines_flags():
    argv = [
        "--input=gs://b/in",
        "--medline=gs://b/a/*.xml.gz, gs://b/b/*.xml.gz",
        "--overwrite=true",
        "--allow_empty=false",
        "--eutils_timeout=5",
        "--runner=DataflowRunner",
        "--experiments=a,b",
    ]
    assert flex_template.launch_argv("enrich", argv) == [
        "--input=gs://b/in",
        "--medline=gs://b/a/*.xml.gz",
        "--medline=gs://b/b/*.xml.gz",
        "--overwrite",
        "--eutils_timeout=5",
        "--runner=DataflowRunner",
        "--experiments=a,b",
    ]
    assert flex_template.launch_argv("shard", ["--overwrite=false"]) == ["--runner=DataflowRunner"]
    with pytest.raises(SystemExit, match="true or false"):
        flex_template.launch_argv("shard", ["--overwrite=maybe"])
    assert flex_template.main(["--pipeline=nothing"]) == 2


def test_entry_runs_as_the_file_the_launcher_names():
    """The launcher runs FLEX_TEMPLATE_PYTHON_PY_FILE as a script, not as a module."""
    done = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "flex_template.py"), "--pipeline=subset", "-h"],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: biomedica subset" in done.stdout and "--where" in done.stdout


# ---- the Dockerfile --------------------------------------------------------------------


def dockerfile() -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(instructions as (KEYWORD, arguments), continuation lines joined; ARG defaults)."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    steps, args = [], {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        steps.append((keyword.upper(), rest.strip()))
        if keyword.upper() == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip()
    return steps, args


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def test_dockerfile_bases_are_pinned_and_match_the_project():
    steps, args = dockerfile()
    bases = [expand(rest, args).split()[0] for key, rest in steps if key == "FROM"]
    launcher = next(b for b in bases if "template-launcher-base" in b)
    assert re.fullmatch(
        r"gcr\.io/dataflow-templates-base/python311-template-launcher-base@sha256:[0-9a-f]{64}",
        launcher,
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    beam_pin = next(d for d in project["dependencies"] if d.startswith("apache-beam"))
    version = beam_pin.split("==")[1]
    assert bases[-1] in (f"apache/beam_python3.11_sdk:{version}",) or bases[-1].startswith(
        f"apache/beam_python3.11_sdk:{version}@sha256:"
    )
    assert ":latest" not in " ".join(bases)
    assert project["requires-python"] == ">=3.11"


def test_dockerfile_copies_what_exists_and_the_context_holds_it():
    steps, args = dockerfile()
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    kept = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    sources = []
    for key, rest in steps:
        if key != "COPY" or rest.startswith("--from"):
            continue
        sources += shlex.split(rest)[:-1]
    assert "pipelines" in sources and "transforms" in sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert any(source == k or source.startswith(k + "/") for k in kept), source
    env = dict(
        rest.split("=", 1) for key, rest in steps if key == "ENV" and "FLEX_TEMPLATE" in rest
    )
    entry = env["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    assert entry == "/template/pipelines/flex_template.py"
    assert (REPO / entry.removeprefix("/template/")).is_file()
    entrypoint = [rest for key, rest in steps if key == "ENTRYPOINT"]
    assert entrypoint == ['["/opt/apache/beam/boot"]']
    launcher_copy = [rest for key, rest in steps if key == "COPY" and rest.startswith("--from")]
    assert any("/opt/google/dataflow/python_template_launcher" in c for c in launcher_copy)


@pytest.mark.parametrize(
    "variant, cuda, index",
    [
        ("cpu", "cu128", "https://download.pytorch.org/whl/cpu"),
        ("cuda", "cu128", "https://download.pytorch.org/whl/cu128"),
        ("cuda", "cu126", "https://download.pytorch.org/whl/cu126"),
        ("gpu", "cu128", None),
        ("cuda", "cu130", None),
    ],
)
def test_torch_variant_picks_its_index(variant, cuda, index):
    done = subprocess.run(
        ["bash", str(DEPLOY / "torch_index.sh"), variant, cuda], capture_output=True, text=True
    )
    if index is None:
        assert done.returncode == 2 and "must be" in done.stderr
    else:
        assert done.returncode == 0 and done.stdout.strip() == index


def test_dockerfile_variants_go_through_the_index_script():
    steps, args = dockerfile()
    assert args["TORCH_VARIANT"] == "cpu" and re.fullmatch(r"cu12\d", args["TORCH_CUDA"])
    runs = " ".join(rest for key, rest in steps if key == "RUN")
    assert 'torch_index.sh "$TORCH_VARIANT" "$TORCH_CUDA"' in runs
    assert '--extra-index-url "$index"' in runs and "-c constraints.txt" in runs
    constraints = (REPO / "constraints.txt").read_text()
    assert "torch==2.13.0" in constraints and "torchvision==0.28.0" in constraints


# ---- build_and_run.sh ------------------------------------------------------------------


def script_launches() -> list[tuple[str, list[str]]]:
    """(pipeline, [key=value...]) of each `launch` the script makes."""
    text = re.sub(r"\\\n", " ", SCRIPT.read_text())
    found = []
    for match in re.finditer(r"\$\(launch (\w+) ([^)]*)\)", text):
        found.append((match.group(1), shlex.split(match.group(2))))
    return found


def test_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck"):
        lint = subprocess.run(
            ["shellcheck", str(SCRIPT), str(DEPLOY / "torch_index.sh")],
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout


def test_script_parameters_are_real_options():
    launches = script_launches()
    assert {p for p, _ in launches} >= {"extract", "enrich", "embed", "annotate", "shard"}
    beam = beam_flags()
    for pipeline, pairs in launches:
        mine = options_of(pipeline)
        for pair in pairs:
            key, eq, value = pair.partition("=")
            assert eq and key in mine, (pipeline, key)
        keys = [p.split("=", 1)[0] for p in pairs]
        required = {k for k in template_metadata.REQUIRED if k in mine}
        assert required <= set(keys), (pipeline, required - set(keys))
    # What launch() adds to every run: the template's chooser and Beam's worker image.
    text = SCRIPT.read_text()
    added = re.search(r'parameters="\^~\^([^"]*)"', text).group(1)
    keys = [part.split("=", 1)[0] for part in added.split("~")]
    assert keys == [template_metadata.PIPELINE_PARAMETER, "sdk_container_image"]
    assert "sdk_container_image" in beam
    assert "--repository-format=docker" in text and "artifacts repositories create" in text
    assert "deploy/dataflow/metadata/*.json" in text


def test_script_gpu_hint_is_valid_and_embed_uses_the_gpu_image():
    text = SCRIPT.read_text()
    hint = re.search(r'GPU="\$\{GPU:-([^}]*)\}"', text).group(1)
    assert gpu.parse_accelerator(hint) == hint
    assert re.search(r'GPU_PIPELINES=" [^"]*\bembed\b[^"]* "', text)
    embed = dict(p.split("=", 1) for p in dict(script_launches())["embed"])
    assert embed["accelerator"] == "$GPU"


# ---- the GPU hint on the embed stage ---------------------------------------------------


def test_accelerator_values():
    assert gpu.parse_accelerator(f" {HINT}; ") == HINT
    assert gpu.parse_accelerator("type:nvidia-tesla-t4;count:1") == "type:nvidia-tesla-t4;count:1"
    for bad, why in [
        ("count:1;install-nvidia-driver", "GPU type"),
        ("type:nvidia-l4", "count must be 1"),
        ("type:nvidia-l4;count:2", "count must be 1"),
        ("type:nvidia-l4;count:1;type:nvidia-t4", "given twice"),
        ("type:;count:1", "not key:value"),
        ("", "GPU type"),
    ]:
        with pytest.raises(ValueError, match=why):
            gpu.parse_accelerator(bad)


def test_bad_accelerator_refused_before_work(tmp_path, capsys):
    from pipelines import embed

    code = embed.main(
        ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
        + ["--accelerator", "type:nvidia-l4;count:4"]
    )
    assert code == 2 and "count must be 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def hints(proto) -> dict[str, dict]:
    """Transform name -> the resource hints of its environment, for the transforms that run
    in one (the runner's own primitives, a GroupByKey or an Impulse, have none)."""
    envs = proto.components.environments
    return {
        t.unique_name: dict(envs[t.environment_id].resource_hints)
        for t in proto.components.transforms.values()
        if t.environment_id
    }


def test_the_hint_lands_on_the_embed_stage_only():
    from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions

    from pipelines import embed
    from transforms.embed.handlers import EmbedHandler

    options = PipelineOptions(["--accelerator", HINT])
    hint = embed.accelerator_of(options)
    assert hint == HINT
    assert gpu.ONE_SDK_PROCESS in options.view_as(DebugOptions).experiments
    p = beam.Pipeline(options=options)
    embed.build(p, ["/x/a.parquet"], "/x", "/y", EmbedHandler("pixels", None), None, "", hint)
    found = hints(p.to_runner_api())
    stage = {n: h for n, h in found.items() if n == "EmbedStage" or n.startswith("EmbedStage/")}
    assert "EmbedStage/Embed/BeamML_RunInference" in stage
    assert all(h.get(ACCELERATOR_URN) == HINT.encode() for h in stage.values())
    others = {n: h for n, h in found.items() if n not in stage}
    assert {"FigureFiles", "WriteDead", "RunReport"} <= set(others)
    assert not any(ACCELERATOR_URN in h for h in others.values())

    plain = PipelineOptions([])
    assert embed.accelerator_of(plain) is None
    assert gpu.ONE_SDK_PROCESS not in (plain.view_as(DebugOptions).experiments or [])


# ---- every graph translates into a Dataflow job (offline) --------------------------------

IMAGE = "us-central1-docker.pkg.dev/test-project/biomedica/biomedica:test"
DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=test-project",
    "--region=us-central1",
    "--temp_location=gs://biomedica-test/tmp",
    "--staging_location=gs://biomedica-test/staging",
    "--job_name=biomedica-translation",
    f"--sdk_container_image={IMAGE}",
    "--no_auth",
    "--dry_run=True",
]
# The main transforms each pipeline's job must hold.
STEPS = {
    "extract": {"Discover", "ExtractStage", "Dedupe", "WriteFigures", "RunReport"},
    "enrich": {"Enrich", "WriteDead", "RunReport"},
    "embed": {"EmbedStage", "EmbedStage/Embed/BeamML_RunInference", "RunReport"},
    "annotate": {"ReadEmbeddings", "RunReport"},
    "shard": {"RunReport"},
    "subset": {"RunReport"},
    "index": {"ReadSampleIds", "ReadEmbeddings", "Encode", "BuildSqlite", "RunReport"},
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A tiny sample corpus and the real outputs the later stages read."""
    from pipelines import embed, extract, shard
    from transforms.pmc.sample_corpus import generate_corpus

    root = tmp_path_factory.mktemp("dataflow")
    generate_corpus(str(root / "corpus"), 6, seed=2, image_side=96)
    quiet = ["--log_level", "ERROR"]
    assert (
        extract.main(["--source", str(root / "corpus"), "--output", str(root / "ext"), *quiet]) == 0
    )
    assert embed.main(["--input", str(root / "ext"), "--output", str(root / "emb"), *quiet]) == 0
    assert shard.main(["--input", str(root / "ext"), "--output", str(root / "ds"), *quiet]) == 0
    return {
        "root": root,
        "corpus": root / "corpus",
        "ext": root / "ext",
        "emb": root / "emb",
        "dataset": root / "ds",
    }


def template_parameters(pipeline: str, inputs: dict[str, Path]) -> list[str]:
    """Launcher-style parameters for a run of `pipeline` on the tiny inputs."""
    values = {
        "source": inputs["corpus"],
        "input": inputs["dataset"] if pipeline == "subset" else inputs["ext"],
        "embeddings": inputs["emb"],
        "dataset": inputs["dataset"],
        "where": "article_license_group == 'commercial'",
        "output": inputs["root"] / f"df-{pipeline}",
    }
    mine = options_of(pipeline)
    argv = [f"--{k}={v}" for k, v in values.items() if k in mine]
    if "medline" in mine:
        argv.append(f"--medline={inputs['corpus']}/pubmed/*.xml.gz")
    if "accelerator" in mine:
        argv.append(f"--accelerator={HINT}")
    return [f"--pipeline={pipeline}", *argv, "--overwrite=true", "--log_level=ERROR"]


@pytest.mark.slow
# `run` is no graph of its own: it runs the stages' jobs one after another, each translated
# here under its own name (test_run_hands_each_stage_to_dataflow checks the hand-over).
@pytest.mark.parametrize("pipeline", [p for p in OPTIONS_OF if p != "run"])
def test_graph_translates_into_a_dataflow_job(pipeline, inputs, monkeypatch, capsys):
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
    from apache_beam.runners.dataflow.internal import apiclient

    built = []
    submit = DataflowRunner.run_pipeline

    def spy(self, p, options, pipeline_proto=None):
        result = submit(self, p, options, pipeline_proto)
        built.append((self, options, result))
        return result

    monkeypatch.setattr(DataflowRunner, "run_pipeline", spy)
    code = flex_template.main([*template_parameters(pipeline, inputs), *DATAFLOW])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["submitted"] is True
    ((runner, options, result),) = built
    job = result.job
    assert job.proto.name == "biomedica-translation"
    assert job.proto.type_ == apiclient.dataflow.JobType.JOB_TYPE_BATCH

    proto = runner.proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert STEPS.get(pipeline, set()) <= names, STEPS.get(pipeline, set()) - names
    assert len(proto.SerializeToString()) < 10_000_000  # Dataflow's request limit

    # The job's environment as Dataflow gets it: Docker environments of our image only.
    environment = apiclient.Environment([], options, "8", "gs://biomedica-test/p.pb", proto)
    (pool,) = environment.proto.worker_pools
    images = {i.container_image for i in pool.sdk_harness_container_images}
    assert images == {IMAGE}
    for env in proto.components.environments.values():
        assert env.urn == common_urns.environments.DOCKER.urn
        payload = beam_runner_api_pb2.DockerPayload.FromString(env.payload)
        assert payload.container_image == IMAGE
    experiments = set(environment.proto.experiments)
    found = hints(proto)
    hinted = {n for n, h in found.items() if ACCELERATOR_URN in h}
    if "accelerator" in options_of(pipeline):
        assert "EmbedStage/Embed/BeamML_RunInference" in hinted
        assert not {"FigureFiles", "WriteDead", "RunReport"} & hinted  # CPU steps stay CPU
        assert gpu.ONE_SDK_PROCESS in experiments
        assert len(pool.sdk_harness_container_images) == 2  # CPU steps and GPU steps
        # Right fitting and the worker_accelerator service option do not go together.
        assert not any("worker_accelerator" in o for o in environment.proto.service_options)
    else:
        assert not hinted and gpu.ONE_SDK_PROCESS not in experiments


@pytest.mark.slow
def test_run_hands_each_stage_to_dataflow(inputs, monkeypatch, capsys):
    """run on Dataflow submits each stage's own job (a dry run submits nothing, so only the
    first stage can be translated: the next reads what that job would write)."""
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    built = []
    submit = DataflowRunner.run_pipeline

    def spy(self, p, options, pipeline_proto=None):
        built.append(self)
        return submit(self, p, options, pipeline_proto)

    monkeypatch.setattr(DataflowRunner, "run_pipeline", spy)
    argv = [*template_parameters("run", inputs), "--stages=extract", *DATAFLOW]
    code = flex_template.main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    (runner,) = built
    names = {t.unique_name for t in runner.proto_pipeline.components.transforms.values()}
    assert STEPS["extract"] <= names
    gathered = json.loads(out.out[out.out.rindex('{\n  "balanced"') :])
    assert gathered["pipeline"] == "run" and list(gathered["stages"]) == ["extract"]
