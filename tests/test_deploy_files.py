"""deploy/flink and deploy/ci: what can be checked without Docker, a cluster or a Google project.

The files parse; the images name the installed Beam release and a Flink version its Flink
runner is built for; ports agree between compose, the Kubernetes manifests and the submit
commands; every flag a command passes to a biomedica pipeline, and every template parameter
the CI workflow launches with, is an option of that pipeline (or Beam's); the workflow's shell
steps pass `bash -n` and it holds no key. The last test runs the README's submit command with
Beam's in-process job service in place of Flink's job server and a worker pool process in
place of the SDK worker pool container.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import free_port, read_table, run_extract

from pipelines import flags
from pipelines.options import OPTIONS_OF

ROOT = Path(__file__).resolve().parents[1]
FLINK = ROOT / "deploy" / "flink"
CI = ROOT / "deploy" / "ci"
COMPOSE = FLINK / "compose.yaml"
K8S = FLINK / "k8s"
WORKFLOW = CI / "dataflow.yml"
METADATA = ROOT / "deploy" / "dataflow" / "metadata"

# Flags of `biomedica run` that no stage pipeline has. Until `run` is in OPTIONS_OF, a command
# or template for `run` is checked against the union of the stage pipelines' flags plus these;
# once it is there, against run's own flags only (and these must be among them).
RUN_ONLY = {"--since"}
# The Flex Template entry's own parameter (pipelines/flex_template.py: which pipeline the
# template runs), used here until that module is on this branch.
TEMPLATE_PARAMETER = "pipeline"
# Beam's Python worker pool listens on this port in the SDK image: boot starts it with
# --service_port=50000.
WORKER_POOL_PORT = 50000
SHELL_END = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "<"}


def yaml_files() -> list[Path]:
    found = [*FLINK.rglob("*.yaml"), *FLINK.rglob("*.yml"), *CI.rglob("*.yaml"), *CI.rglob("*.yml")]
    return sorted(set(found))


def load(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def option_strings(classes) -> set[str]:
    parser = argparse.ArgumentParser(add_help=False)
    for cls in classes:
        cls._add_argparse_args(parser)
    return {o for a in parser._actions for o in a.option_strings}


def beam_flags() -> set[str]:
    """Every flag of Beam's registered PipelineOptions, as the pipelines accept them."""
    return {o for a in flags._beam_parser()._actions for o in a.option_strings}


def flags_of(pipeline: str) -> set[str]:
    """The pipeline's own flags (Beam's not included)."""
    if pipeline == "sample":
        from pipelines.sample import add_flags

        parser = argparse.ArgumentParser(add_help=False)
        add_flags(parser)
        return {o for a in parser._actions for o in a.option_strings}
    if pipeline in OPTIONS_OF:
        return option_strings(OPTIONS_OF[pipeline])
    assert pipeline == "run", f"no pipeline {pipeline!r}"
    stages = set().union(*(option_strings(classes) for classes in OPTIONS_OF.values()))
    return stages | RUN_ONLY


def template_parameters() -> set[str]:
    try:
        from pipelines import flex_template
    except ImportError:
        return {TEMPLATE_PARAMETER}
    return {flex_template.PARAMETER}


# --- commands in the files -------------------------------------------------------------------


def code_of(path: Path) -> str:
    """The shell text of a file: a shell script, fenced blocks of a Markdown file, the comment
    lines of a YAML file (its usage notes) and the `run:` steps of a workflow."""
    text = path.read_text()
    if path.suffix == ".sh":
        return text
    if path.suffix == ".md":
        return "\n".join(re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S))
    comments = [
        re.sub(r"^\s*#\s?", "", line) for line in text.splitlines() if line.strip()[:1] == "#"
    ]
    steps = [step["run"] for step in workflow_steps(path)] if path == WORKFLOW else []
    return "\n".join([*comments, *steps])


def workflow_steps(path: Path = WORKFLOW) -> list[dict]:
    doc = load(path)[0]
    return [s for job in doc["jobs"].values() for s in job["steps"] if "run" in s]


def logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def biomedica_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(pipeline, its arguments) of every `biomedica PIPELINE ...` in the file's code."""
    found = []
    for line in logical_lines(code_of(path)):
        match = re.search(r"(?:^|[\s(;&|$])biomedica\s+([a-z_]+)(\s+--.*|\s*)$", line)
        if not match:  # prose ("biomedica on Dataflow"), not a command
            continue
        args = []
        for token in shlex.split(match.group(2), comments=True):
            if token in SHELL_END:
                break
            args.append(token)
        found.append((match.group(1), args))
    return found


def command_files() -> list[Path]:
    return sorted(p for p in [*FLINK.rglob("*"), *CI.rglob("*")] if p.is_file())


def all_commands() -> list[tuple[Path, str, list[str]]]:
    return [(p, name, args) for p in command_files() for name, args in biomedica_commands(p)]


def flag_names(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def template_launches() -> list[tuple[str, list[str], str]]:
    """(pipeline of the template, parameter keys, the command) of each flex-template run."""
    launches = []
    for path in command_files():
        if path.suffix not in (".yml", ".yaml", ".sh", ".md"):
            continue
        for line in logical_lines(code_of(path)):
            if "flex-template run" not in line:
                continue
            spec = re.search(r"--template-file-gcs-location[= ]\"?([^\"\s]+)", line)
            parameters = re.findall(r"--parameters[= ](\"[^\"]*\"|'[^']*'|\S+)", line)
            assert spec and parameters, f"{path.name}: a launch without template or parameters"
            pipeline = Path(spec.group(1)).name.removesuffix(".json")
            keys = []
            for value in parameters:
                value = value.strip("\"'")
                delimiter = ","
                custom = re.match(r"\^(.)\^", value)
                if custom:
                    delimiter, value = custom.group(1), value[custom.end() :]
                keys += re.findall(rf"(?:^|{re.escape(delimiter)})([A-Za-z_]\w*)=", value)
            launches.append((pipeline, keys, line))
    return launches


# --- the files parse -------------------------------------------------------------------------


def test_every_yaml_file_parses():
    files = yaml_files()
    names = {p.relative_to(ROOT).as_posix() for p in files}
    assert {"deploy/flink/compose.yaml", "deploy/ci/dataflow.yml"} <= names
    assert len([n for n in names if n.startswith("deploy/flink/k8s/")]) >= 4
    for path in files:
        docs = load(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), path


def test_kubernetes_manifests_are_well_formed():
    resources = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            resources[(doc["kind"], doc["metadata"]["name"])] = doc
    listed = load(K8S / "kustomization.yaml")[0]["resources"]
    assert sorted(listed) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    for (kind, name), doc in resources.items():
        if kind == "Deployment":
            spec = doc["spec"]
            labels = spec["template"]["metadata"]["labels"]
            assert spec["selector"]["matchLabels"].items() <= labels.items(), name
            claims = {
                v["persistentVolumeClaim"]["claimName"]
                for v in spec["template"]["spec"].get("volumes", [])
                if "persistentVolumeClaim" in v
            }
            assert all(("PersistentVolumeClaim", c) in resources for c in claims), name
            account = spec["template"]["spec"].get("serviceAccountName")
            assert account is None or ("ServiceAccount", account) in resources, name
        if kind == "Service":
            selected = [
                d
                for (k, _), d in resources.items()
                if k == "Deployment"
                and doc["spec"]["selector"].items()
                <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            assert len(selected) == 1, f"Service {name} selects {len(selected)} deployments"
            named = {
                p["name"]: p["containerPort"]
                for c in selected[0]["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for port in doc["spec"]["ports"]:
                assert port["targetPort"] in named, (
                    f"{name}: no container port {port['targetPort']}"
                )
                assert named[port["targetPort"]] == port["port"], name


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomization_renders():
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "flink-jobmanager"),
        ("Deployment", "flink-taskmanager"),
        ("Deployment", "beam-job-server"),
        ("Service", "beam-job-server"),
    } <= kinds
    assert all(
        d["metadata"].get("namespace") == "biomedica" for d in docs if d["kind"] != "Namespace"
    )
    # The worker image placeholder is replaced by the image kustomization.yaml names.
    images = [c["image"] for d in docs if d["kind"] == "Deployment" for c in containers(d)]
    assert "biomedica" not in images
    assert any(i.endswith("/biomedica/biomedica:VERSION") for i in images), images


def compose_command() -> list[str] | None:
    """Compose v2 (`docker compose`), or v1 (`docker-compose`, Debian's package), or None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(compose_command() is None, reason="neither docker compose nor docker-compose")
def test_compose_file_is_valid_compose(tmp_path):
    """Compose's own schema check (`config` needs no daemon)."""
    command = compose_command()
    path = COMPOSE
    if command == ["docker-compose"]:
        # Compose v1 predates the top-level `name` of the Compose Specification.
        path = tmp_path / "compose.yaml"
        path.write_text(re.sub(r"(?m)^name:.*\n", "", COMPOSE.read_text()))
    out = subprocess.run(
        # Relative paths (the build context) are read from the project directory.
        [*command, "-f", str(path), "--project-directory", str(COMPOSE.parent), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, BIOMEDICA_DATA=str(tmp_path)),
    )
    assert out.returncode == 0, out.stderr
    rendered = yaml.safe_load(out.stdout)["services"]
    pool = next(s for s in rendered.values() if s.get("network_mode"))
    assert Path(pool["build"]["context"]) == ROOT
    assert pool["volumes"][0]["source"] == pool["volumes"][0]["target"] == str(tmp_path)


# --- images and versions ---------------------------------------------------------------------


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


def compose() -> dict:
    return load(COMPOSE)[0]


def k8s_deployments() -> dict[str, dict]:
    return {
        d["metadata"]["name"]: d
        for p in K8S.glob("*.yaml")
        for d in load(p)
        if d.get("kind") == "Deployment"
    }


def beam_versions() -> tuple[str, list[str]]:
    from apache_beam.options.pipeline_options import FlinkRunnerOptions
    from apache_beam.version import __version__

    return __version__, list(FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS)


def images_of_files() -> dict[str, list[str]]:
    return {
        "compose": [s["image"] for s in compose()["services"].values()],
        "k8s": [c["image"] for d in k8s_deployments().values() for c in containers(d)],
    }


def test_images_name_the_installed_beam_and_a_flink_it_supports():
    beam, supported = beam_versions()
    for where, images in images_of_files().items():
        servers = [re.fullmatch(r"apache/beam_flink([\d.]+)_job_server:(.+)", i) for i in images]
        servers = [m for m in servers if m]
        clusters = [re.fullmatch(r"flink:([\d.]+)(?:[-.].*)?", i) for i in images]
        clusters = [m for m in clusters if m]
        assert servers and clusters, f"{where}: no job server or no Flink image in {images}"
        for m in servers:
            assert m.group(2) == beam, f"{where}: job server of Beam {m.group(2)}, not {beam}"
            assert m.group(1) in supported, f"{where}: Beam {beam} has no Flink {m.group(1)} runner"
        flink_versions = {m.group(1) for m in clusters} | {m.group(1) for m in servers}
        assert len(flink_versions) == 1, f"{where}: Flink versions differ: {flink_versions}"
        for image in images:
            sdk = re.fullmatch(r"apache/beam_python([\d.]+)_sdk:(.+)", image)
            if sdk:
                assert sdk.group(2) == beam, image
                assert sdk.group(1) == f"{sys.version_info[0]}.{sys.version_info[1]}", image


def test_sdk_workers_are_the_project_image_in_a_worker_pool_beside_the_taskmanager():
    services = compose()["services"]
    pools = [n for n, s in services.items() if s.get("command") == ["--worker_pool"]]
    assert len(pools) == 1, pools
    pool = services[pools[0]]
    # Our image, built from the repository's Dockerfile, sharing the taskmanager's localhost.
    context = (COMPOSE.parent / pool["build"]["context"]).resolve()
    assert context == ROOT and (context / pool["build"].get("dockerfile", "Dockerfile")).is_file()
    taskmanager = pool["network_mode"].removeprefix("service:")
    assert services[taskmanager]["command"] == "taskmanager"
    data = pool["volumes"][0]
    assert data["source"] == data["target"], "the data folder: the same path inside and out"

    taskmanagers = k8s_deployments()["flink-taskmanager"]
    sidecars = [c for c in containers(taskmanagers) if c.get("args") == ["--worker_pool"]]
    assert len(sidecars) == 1 and sidecars[0]["image"] == "biomedica"
    assert [p["containerPort"] for p in sidecars[0]["ports"]] == [WORKER_POOL_PORT]
    named = {i["name"] for i in load(K8S / "kustomization.yaml")[0]["images"]}
    assert "biomedica" in named


# --- ports -----------------------------------------------------------------------------------


def server_flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args)


def flink_properties(env) -> dict[str, str]:
    if isinstance(env, list):
        env = {e["name"]: e.get("value", "") for e in env}
    return yaml.safe_load(env["FLINK_PROPERTIES"])


def readme_submits() -> list[list[str]]:
    commands = [args for name, args in biomedica_commands(FLINK / "README.md")]
    submits = [a for a in commands if "--job_endpoint" in a]
    assert len(submits) >= 3, "the README's submit commands are missing"
    return submits


def value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_ports_agree_between_compose_kubernetes_and_the_submit_command():
    services = compose()["services"]
    server = next(s for s in services.values() if "job_server" in s["image"])
    compose_server = server_flags(server["command"])
    published = {p.split(":")[0]: p.split(":")[1] for p in server["ports"]}
    for port in ("job-port", "artifact-port", "expansion-port"):
        assert published[compose_server[port]] == compose_server[port], port

    deployment = k8s_deployments()["beam-job-server"]
    k8s_server = server_flags(containers(deployment)[0]["args"])
    for key in ("job-port", "artifact-port", "expansion-port", "artifacts-dir"):
        assert k8s_server[key] == compose_server[key], key

    # The job server reaches the jobmanager's REST port by its service name, in both.
    host, rest = compose_server["flink-master"].split(":")
    assert f"{rest}:{rest}" in services[host]["ports"]
    assert flink_properties(services[host]["environment"]).get("rest.port", 8081) == int(rest)
    k8s_host, k8s_rest = k8s_server["flink-master"].split(":")
    service = next(d for d in load(K8S / "jobmanager.yaml") if d["kind"] == "Service")
    assert service["metadata"]["name"] == k8s_host
    assert int(k8s_rest) in {p["port"] for p in service["spec"]["ports"]}
    # The task managers find the jobmanager by the same names.
    for s in services.values():
        if "FLINK_PROPERTIES" in (s.get("environment") or {}):
            assert flink_properties(s["environment"])["jobmanager.rpc.address"] == host
    for name in ("flink-jobmanager", "flink-taskmanager"):
        env = containers(k8s_deployments()[name])[0]["env"]
        assert flink_properties(env)["jobmanager.rpc.address"] == k8s_host

    # Each artifacts volume is mounted where the job server stages.
    staged = compose_server["artifacts-dir"]
    for name in ("job-server", "taskmanager"):
        assert any(v.endswith(f":{staged}") for v in services[name]["volumes"]), name

    for args in readme_submits():
        assert value(args, "--job_endpoint") == f"localhost:{compose_server['job-port']}"
        assert value(args, "--artifact_endpoint") == f"localhost:{compose_server['artifact-port']}"
        assert value(args, "--environment_type") == "EXTERNAL"
        assert value(args, "--environment_config") == f"localhost:{WORKER_POOL_PORT}"
    forward = re.search(
        r"port-forward svc/(\S+) (\d+):(\d+) (\d+):(\d+)", code_of(FLINK / "README.md")
    )
    assert forward, "the README's port-forward line is missing"
    assert forward.group(1) == deployment["metadata"]["name"]
    assert forward.group(2, 3) == (k8s_server["job-port"],) * 2
    assert forward.group(4, 5) == (k8s_server["artifact-port"],) * 2


# --- flags and template parameters -----------------------------------------------------------


def test_run_only_flags_belong_to_run():
    stages = set().union(*(option_strings(c) for n, c in OPTIONS_OF.items() if n != "run"))
    assert not RUN_ONLY & stages, "a flag marked run-only is a stage pipeline's"
    if "run" in OPTIONS_OF:
        assert RUN_ONLY <= option_strings(OPTIONS_OF["run"])


def test_every_flag_passed_to_a_pipeline_is_one_of_its_options():
    commands = all_commands()
    assert {"extract", "enrich", "shard"} <= {name for _, name, _ in commands}
    beam = beam_flags()
    for path, pipeline, args in commands:
        known = flags_of(pipeline) | (beam if pipeline != "sample" else set())
        for flag in flag_names(args):
            assert flag in known, f"{path.name}: biomedica {pipeline} has no {flag}"
        if pipeline in OPTIONS_OF:
            # Its own strict parser takes the whole command (flags, values, Beam's flags).
            from pipelines.options import parse

            parse(pipeline, args)


def test_every_template_parameter_is_an_option_of_its_pipeline():
    launches = template_launches()
    assert len(launches) >= 2, "the full and the incremental run"
    beam = {f.removeprefix("--") for f in beam_flags()}
    for pipeline, keys, line in launches:
        assert pipeline == "run", line
        own = {f.removeprefix("--") for f in flags_of(pipeline)}
        for key in keys:
            assert key in own | beam | template_parameters(), f"{pipeline} has no parameter {key}"
        declared = METADATA / f"{pipeline}.json"
        if declared.exists():
            names = {p["name"] for p in json.loads(declared.read_text())["parameters"]}
            missing = set(keys) - beam - names
            assert not missing, f"{declared.name} does not declare {missing}"
        assert {"source", "output", "inventory"} <= set(keys), line
    assert sum("since" in keys for _, keys, _ in launches) == 1, "one incremental run"


def test_the_workflow_schedules_both_runs_and_holds_no_key():
    doc = load(WORKFLOW)[0]
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    crons = [s["cron"] for s in triggers["schedule"]]
    assert len(crons) == 2 and doc["env"]["FULL_SCHEDULE"] in crons
    yearly = doc["env"]["FULL_SCHEDULE"].split()
    assert yearly[2] != "*" and yearly[3] != "*", "the full run is yearly"
    inputs = triggers["workflow_dispatch"]["inputs"]
    assert set(inputs["mode"]["options"]) == {"full", "incremental"} and "since" in inputs
    assert doc["permissions"]["id-token"] == "write"
    auth = [
        s
        for job in doc["jobs"].values()
        for s in job["steps"]
        if str(s.get("uses", "")).startswith("google-github-actions/auth@")
    ]
    assert len(auth) == len(doc["jobs"])
    assert all(set(s["with"]) == {"workload_identity_provider", "service_account"} for s in auth)
    text = WORKFLOW.read_text()
    for secret in ("credentials_json", "private_key", "BEGIN PRIVATE KEY", "secrets."):
        assert secret not in text, secret


def shell_scripts() -> list[tuple[str, str]]:
    scripts = [(p.name, p.read_text()) for p in command_files() if p.suffix == ".sh"]
    for i, step in enumerate(workflow_steps()):
        # A GitHub expression is text to bash once substituted: stand in a word.
        scripts.append((f"{WORKFLOW.name} step {i}", re.sub(r"\$\{\{.*?\}\}", "X", step["run"])))
    return scripts


def test_shell_steps_pass_bash_n():
    scripts = shell_scripts()
    assert len(scripts) >= 5
    for name, text in scripts:
        out = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert out.returncode == 0, f"{name}: {out.stderr}"


def test_bash_n_fails_on_a_broken_step():
    out = subprocess.run(
        ["bash", "-n"], input='if [ -z "$x" ]; then\n', capture_output=True, text=True
    )
    assert out.returncode != 0


# --- the submit command, on Beam's own job service and a worker pool -------------------------


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the worker pool ended"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"no worker pool on port {port}")


@pytest.mark.slow
def test_the_submit_command_runs_on_a_worker_pool(tmp_path):
    """The README's extract command as written, but for two endpoints: Beam's in-process job
    service instead of Flink's job server (no Flink here), and a worker pool process on a free
    port instead of the container's. The SDK workers come from the pool, as on Flink."""
    from transforms.pmc.sample_corpus import generate_corpus

    command = next(a for a in readme_submits() if "--source" in a)
    data = tmp_path / "data"
    generate_corpus(str(data / "sample"), 8, seed=3, image_side=200)
    port = free_port()
    args = []
    for flag, arg in zip(command[::2], command[1::2], strict=True):
        arg = arg.replace("$BIOMEDICA_DATA", str(data))
        if flag == "--job_endpoint":
            arg = "embed"
        elif flag == "--environment_config":
            arg = f"localhost:{port}"
        if flag != "--artifact_endpoint":  # the embedded job service stages itself
            args += [flag, arg]

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # The pool starts each worker as `python -c ...`: this interpreter, as in the image.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "pool.log"
    with log.open("w") as out:
        pool = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.worker.worker_pool_main",
                f"--service_port={port}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, pool)
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "extract", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        os.killpg(pool.pid, signal.SIGTERM)
        pool.wait(timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting worker" in log.read_text(), "no SDK worker came from the pool"
    report = json.loads((data / "out" / "run_report.json").read_text())
    assert report["balanced"], report

    reference = tmp_path / "in-process"
    expected = run_extract(["--source", str(data / "sample"), "--output", str(reference)])
    assert report["stages"] == expected["stages"]
    got = {r["key"]: r["image_hash"] for r in read_table(data / "out" / "extract" / "figures")}
    want = {r["key"]: r["image_hash"] for r in read_table(reference / "extract" / "figures")}
    assert got == want and len(got) > 10
