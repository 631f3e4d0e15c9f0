"""`--runner DaskRunner` on a real dask.distributed cluster: a scheduler and two worker
processes on 127.0.0.1, started here. The pipelines must write on it what they write on the
in-process runner: the same extract files byte for byte, the same shard checksums, the same
run report counts (pipelines/dask_runner.py says what Beam's own DaskRunner would get wrong).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from conftest import run_extract
from test_enrich import CASES, MEDLINE, _set_pmids

from pipelines import embed, enrich, options, shard
from pipelines.dask_runner import DaskRunner
from pipelines.runner import make_pipeline
from transforms.pmc.sample_corpus import generate_corpus


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two single-threaded worker processes, on 127.0.0.1 only."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as running:
        yield running.scheduler_address


def test_the_cluster_listens_on_127_0_0_1_only(cluster):
    import psutil

    here = psutil.Process()
    listening = [
        c.laddr
        for process in [here, *here.children(recursive=True)]
        for c in process.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert cluster.startswith("tcp://127.0.0.1:")
    assert len(listening) >= 3  # the scheduler and a worker (and its nanny) each
    assert {addr.ip for addr in listening} == {"127.0.0.1"}, listening


def on_dask(address: str) -> list[str]:
    return ["--runner", "DaskRunner", "--dask_client_address", address]


def files_of(root: Path, *folders: str, home: Path | None = None) -> dict[str, str]:
    """sha256 of every file under the folders, by path relative to `root`; in JSON and
    Markdown files (reports, manifests, links, the card) the run's own folder reads `<run>`."""
    found = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                if home is not None and path.suffix in (".json", ".md"):
                    data = data.replace(str(home).encode(), b"<run>")
                found[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return found


def same_for_any_folder(report: dict, home: Path) -> dict:
    """A run report less its time, its run's own folder reading `<run>`."""
    text = json.dumps({k: v for k, v in report.items() if k != "wall_seconds"})
    return json.loads(text.replace(str(home), "<run>"))


# Beam's DaskRunner, run as it ships, loses what these do; ours must not.


class _Tally(beam.DoFn):
    """A main and a tagged output, and one more element per bundle from finish_bundle."""

    def start_bundle(self):
        self.seen = 0

    def process(self, n):
        self.seen += 1
        if n % 3 == 0:
            yield beam.pvalue.TaggedOutput("threes", n)
        yield n

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        yield GlobalWindows.windowed_value(-self.seen)


def _write(_, path, total, threes, bundles, groups):
    Path(path).write_text(json.dumps([total, threes, bundles, sorted(groups)]))


def _beam_features(p, out: Path) -> None:
    numbers = p | beam.Create(["start"]) | beam.FlatMap(lambda _: range(30)) | beam.Reshuffle()
    tallied = numbers | beam.ParDo(_Tally()).with_outputs("threes", main="numbers")
    counted = tallied.numbers | beam.Filter(lambda n: n >= 0)
    bundles = tallied.numbers | "Seen" >> beam.Filter(lambda n: n < 0) | beam.Map(abs)
    groups = (
        counted
        | beam.Map(lambda n: (f"k{n % 4}", n))
        | beam.GroupByKey()
        | beam.MapTuple(lambda k, ns: (k, sorted(ns)))
    )
    # Two sinks on two branches: each must run.
    _ = (
        p
        | "Once" >> beam.Create([None])
        | beam.Map(
            _write,
            str(out / "sides.json"),
            beam.pvalue.AsSingleton(counted | beam.CombineGlobally(sum)),
            beam.pvalue.AsList(tallied.threes),
            beam.pvalue.AsSingleton(bundles | "Bundles" >> beam.CombineGlobally(sum)),
            beam.pvalue.AsList(groups),
        )
    )
    _ = (
        tallied.threes
        | "Count" >> beam.combiners.Count.Globally()
        | beam.Map(lambda n: (out / "count.txt").write_text(str(n)))
    )


def test_beam_features_run_as_on_the_in_process_runner(cluster, tmp_path):
    results = {}
    for name, flags in (("in-process", []), ("dask", on_dask(cluster))):
        out = tmp_path / name
        out.mkdir()
        p = make_pipeline(PipelineOptions(flags))
        assert isinstance(p.runner, DaskRunner) == (name == "dask")
        _beam_features(p, out)
        p.run().wait_until_finish()
        total, threes, bundles, groups = json.loads((out / "sides.json").read_text())
        results[name] = total, sorted(threes), bundles, groups, (out / "count.txt").read_text()
    assert results["dask"] == results["in-process"]
    total, threes, bundles, groups, count = results["dask"]
    assert total == sum(range(30))
    assert threes == list(range(0, 30, 3))
    assert bundles == 30  # every element counted once, by the bundle that saw it
    assert groups == [[f"k{k}", list(range(k, 30, 4))] for k in range(4)]
    assert count == "10"


class _Stateful(beam.DoFn):
    COUNT = beam.transforms.userstate.CombiningValueStateSpec("count", sum)

    def process(self, kv, count=beam.DoFn.StateParam(COUNT)):
        count.add(1)
        yield kv


def test_what_it_cannot_run_is_refused_before_any_work(cluster, tmp_path):
    p = make_pipeline(PipelineOptions(on_dask(cluster)))
    _ = (
        p
        | beam.Create([("a", 1)])
        | "Counted" >> beam.ParDo(_Stateful())
        | beam.Map(lambda _: (tmp_path / "ran").write_text("ran"))
    )
    with pytest.raises(NotImplementedError, match="Counted.*state or timers"):
        p.run()
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("pipeline", sorted(options.OPTIONS_OF))
def test_every_pipeline_takes_the_dask_flags(pipeline):
    flags = [*on_dask("127.0.0.1:8786"), "--dask_connection_timeout", "30", "--dask_npartitions"]
    options.parse(pipeline, [*flags, "4"])


# The pipelines on the generated sample corpus, on both runners.


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """extract, then shard, enrich (MEDLINE) and embed (pixels) of its output, on the
    in-process runner and on the cluster: {runner: {job: (output, report)}}."""
    root = tmp_path_factory.mktemp("dask")
    generate_corpus(str(root / "corpus"), 10, seed=3, image_side=128)
    found = {}
    for name, flags in (("in-process", []), ("dask", on_dask(cluster))):
        quiet = [*flags, "--log_level", "ERROR"]
        out = root / name
        jobs = {"home": out}
        extracted = out / "extract"
        jobs["extract"] = (
            extracted,
            run_extract(["--source", str(root / "corpus"), "--output", str(extracted), *quiet]),
        )
        dataset = out / "shard"
        jobs["shard"] = (
            dataset,
            shard.run(
                ["--input", str(extracted), "--output", str(dataset), "--samples_per_shard", "8"]
                + quiet
            ),
        )
        embedded = out / "embed"
        jobs["embed"] = (
            embedded,
            embed.run(["--input", str(extracted), "--output", str(embedded), *quiet]),
        )
        with_pmids = out / "with-pmids"
        shutil.copytree(extracted, with_pmids)
        _set_pmids(with_pmids, [pmid for pmid, _ in CASES][:9])
        enriched = out / "enrich"
        jobs["enrich"] = (
            enriched,
            enrich.run(
                ["--input", str(with_pmids), "--output", str(enriched)]
                + ["--medline", str(MEDLINE / "*.xml.gz"), *quiet]
            ),
        )
        found[name] = jobs
    return found


@pytest.mark.slow
@pytest.mark.parametrize("job", ["extract", "shard", "embed", "enrich"])
def test_dask_reports_the_same_counts(runs, job):
    (_, local), (_, dask) = runs["in-process"][job], runs["dask"][job]
    assert dask["balanced"], dask
    assert dask["stages"] == local["stages"]
    homes = runs["in-process"]["home"], runs["dask"]["home"]
    assert same_for_any_folder(dask, homes[1]) == same_for_any_folder(local, homes[0])


@pytest.mark.slow
def test_dask_extract_writes_the_same_files(runs):
    (local, report), (dask, _) = runs["in-process"]["extract"], runs["dask"]["extract"]
    folders = ("extract", "dead_letter", "filtered")
    assert files_of(dask, *folders) == files_of(local, *folders)
    assert len(files_of(local, "extract/figures", "extract/articles")) == 2
    assert report["stages"]["dedupe"]["out"] > 20
    assert report["stages"]["discover"]["filtered"] >= 1


@pytest.mark.slow
def test_dask_shards_have_the_same_checksums(runs):
    (local, _), (dask, _) = runs["in-process"]["shard"], runs["dask"]["shard"]
    manifests = [json.loads((out / "manifest.json").read_text()) for out in (local, dask)]
    assert len(manifests[0]["shards"]) >= 3
    assert manifests[1]["shards"] == manifests[0]["shards"]
    assert manifests[1]["totals"] == manifests[0]["totals"]
    homes = runs["in-process"]["home"], runs["dask"]["home"]
    assert files_of(dask, ".", home=homes[1]) == files_of(local, ".", home=homes[0])


@pytest.mark.slow
@pytest.mark.parametrize("job", ["embed", "enrich"])
def test_dask_embed_and_enrich_write_the_same_files(runs, job):
    (local, report), (dask, _) = runs["in-process"][job], runs["dask"][job]
    homes = runs["in-process"]["home"], runs["dask"]["home"]
    written = [files_of(local, ".", home=homes[0]), files_of(dask, ".", home=homes[1])]
    if job == "enrich":
        # The link to the figures names the checksum of their run's report, which names its
        # own folder: each run links to its own extract output.
        for files, out, home in ((written[0], local, homes[0]), (written[1], dask, homes[1])):
            assert files.pop("extract/figures.json")
            link = json.loads((out / "extract" / "figures.json").read_text())
            assert link["figures"] == str(home / "with-pmids" / "extract" / "figures")
    assert len(written[0]) >= 2
    assert written[1] == written[0]
    if job == "enrich":
        assert report["stages"]["enrich"]["by_status"]["matched"] >= 4


# deploy/dask: the files parse and their commands name real flags.

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dask"


def _commands(markdown: str, program: str) -> list[list[str]]:
    """The command lines of the fenced code blocks that start with `program`, as argv."""
    import re
    import shlex

    found = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith(program + " "):
                found.append(shlex.split(line.split(" &", 1)[0], comments=True)[1:])
    return found


def test_the_deploy_readme_commands_name_real_flags():
    import importlib.util

    text = (DEPLOY / "README.md").read_text()
    runs = _commands(text, "biomedica")
    assert len(runs) >= 4
    for pipeline, *argv in runs:
        assert "DaskRunner" in argv
        options.parse(pipeline, argv)
    spec = importlib.util.spec_from_file_location("slurm_cluster", DEPLOY / "slurm_cluster.py")
    slurm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(slurm)  # dask-jobqueue is imported only when it starts a cluster
    (script, *argv), *_ = _commands(text, "python")
    assert script == "deploy/dask/slurm_cluster.py"
    args = slurm.parse(argv)
    assert (args.jobs, args.cores, args.address_file) == (8, 16, "scheduler.txt")


def test_the_kubernetes_manifests_parse_and_agree():
    import yaml

    (cluster,) = yaml.safe_load_all((DEPLOY / "kubernetes" / "dask-cluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("kubernetes.dask.org/v1", "DaskCluster")
    spec = cluster["spec"]
    worker = spec["worker"]["spec"]["containers"][0]
    scheduler = spec["scheduler"]["spec"]["containers"][0]
    assert worker["command"] == ["dask", "worker"]
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "1"
    assert scheduler["command"] == ["dask", "scheduler"]
    assert worker["image"] == scheduler["image"] == "IMAGE"
    port = spec["scheduler"]["service"]["ports"][0]
    assert port["name"] == "tcp-comm" and port["port"] == 8786

    (job,) = yaml.safe_load_all((DEPLOY / "kubernetes" / "submit-job.yaml").read_text())
    launcher = job["spec"]["template"]["spec"]["containers"][0]
    assert launcher["command"] == ["biomedica"] and launcher["image"] == "IMAGE"
    pipeline, *argv = launcher["args"]
    options.parse(pipeline, argv)
    address = argv[argv.index("--dask_client_address") + 1]
    assert address == f"tcp://{cluster['metadata']['name']}-scheduler:{port['port']}"
