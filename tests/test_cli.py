"""The command line as a user meets it: help, refused flags and values, one-line errors and
exit codes, progress, overlapping outputs, locks, the sample command and the dataset card."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines import cli
from pipelines.options import OPTIONS_OF, parse
from pipelines.runner import refuse_overlap
from transforms import progress, storage
from transforms.pmc.sample_corpus import generate_corpus
from transforms.records import SHARD_INDEX_SCHEMA
from transforms.run_lock import LOCK_FILE, LockError, RunLock
from transforms.shard import dataset_card
from transforms.shard.row_filter import FilterError, compile_where

REPO = Path(__file__).resolve().parents[1]


def command(*argv: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`python -m <module> argv` with this checkout first on the path."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
        timeout=300,
        **kwargs,
    )


def error_lines(stderr: str) -> list[str]:
    """stderr without progress lines."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS.match(line)]


PROGRESS = re.compile(r"^(extract|shard|subset) \d+:\d\d:\d\d  ")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "corpus"
    generate_corpus(str(root), 4, seed=1, image_side=120)
    return root


@pytest.fixture(scope="module")
def dataset(corpus) -> Path:
    from pipelines.extract import run as extract
    from pipelines.shard import run as shard

    extracted = corpus.parent / "extracted"
    extract(["--source", str(corpus), "--output", str(extracted), "--log_level", "ERROR"])
    out = corpus.parent / "dataset"
    shard(["--input", str(extracted), "--output", str(out), "--log_level", "ERROR"])
    return out


def main(argv: list[str], capsys) -> tuple[int, str, str]:
    """`biomedica argv` in this process: (exit status, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


# ---- 1. help -----------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", ["extract", "shard", "subset", "sample"])
def test_help_lists_every_flag_with_its_default(pipeline, capsys):
    code, out, _ = main([pipeline, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: biomedica {pipeline}")
    if pipeline == "sample":
        expected = ["--output", "--articles", "--seed", "--image_side", "--workers", "--overwrite"]
        assert "(default: 50)" in out
    else:
        import argparse

        parser = argparse.ArgumentParser(add_help=False)
        for cls in OPTIONS_OF[pipeline]:
            cls._add_argparse_args(parser)
        expected = [o for a in parser._actions for o in a.option_strings]
        assert "--help_beam" in out and "--runner" in out  # the pointer to Beam's flags
    for flag in [*expected, "--log_level"]:
        assert flag in out, flag
    if pipeline in ("shard", "subset"):
        assert "--samples_per_shard SAMPLES_PER_SHARD" in out and "(default: 1000)" in out
    if pipeline == "extract":
        assert out.index("--layout") < out.index("Beam pipeline flags")  # ours first
        assert "(default: 89478485)" in out  # --max_pixels


def test_help_from_the_module_and_beam_flags_listed(capsys):
    shown = command("pipelines.extract", "--help")
    assert shown.returncode == 0 and "--modified_since" in shown.stdout
    assert "usage: biomedica extract" in shown.stdout and shown.stderr == ""
    code, out, _ = main(["shard", "--help_beam"], capsys)
    assert code == 0
    for flag in ("--runner", "--project", "--temp_location", "--direct_num_workers"):
        assert flag in out


# ---- 2. unknown flags ----------------------------------------------------------------------


def test_mistyped_flag_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    shown = command(
        "pipelines.extract", "--source", str(tmp_path), "--output", str(out), "--layuot", "folder"
    )
    assert shown.returncode == 2
    assert shown.stderr.splitlines() == [
        "biomedica extract: error: unrecognized flag --layuot; did you mean --layout?"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["shard", "--samples_per_shrad", "3"], "did you mean --samples_per_shard?"),
        (["subset", "--wher", "x"], "did you mean --where?"),
        (["extract", "--where", "x"], "--where is a flag of biomedica subset"),
        (["extract", "--input", "x"], "--input is a flag of biomedica shard"),
        (["sample", "--article", "3"], "did you mean --articles?"),
        (["shard", "stray"], "unexpected argument 'stray'"),
        (["extract", "--runer", "x"], "did you mean --runner?"),
    ],
)
def test_unknown_flags_refused_with_a_suggestion(argv, message, capsys):
    code, _, err = main(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_unknown_pipeline_refused_with_a_suggestion(capsys):
    code, _, err = main(["extrat", "--source", "x"], capsys)
    assert (
        code == 2 and err == "biomedica: error: unknown pipeline 'extrat'; did you mean extract?\n"
    )


def test_beam_flags_still_pass():
    argv = [
        "--runner", "DirectRunner", "--project", "p", "--temp_location", "/tmp/t",
        "--direct_num_workers", "2", "--direct_running_mode", "multi_processing",
        "--s3_endpoint_url", "http://127.0.0.1:9", "--dry_run", "true", "--region=r",
        "--experiments", "a", "--experiments", "b", "--source", "x",
    ]  # fmt: skip
    assert parse("extract", argv).source == "x"
    assert parse("extract", ["--near_duplicate_threshold", "-1"]).near_duplicate_threshold == -1


# ---- 3. bad values and failures: one line, a non-zero status ---------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--modified_since", "yesterday"], "not an ISO 8601 date"),
        (["--license_groups", "noncomercial"], "unknown license group"),
        (["--min_side", "-1"], "--min_side must not be negative"),
        (["--max_image_bytes", "-5"], "--max_image_bytes must not be negative"),
        (["--near_duplicate_threshold", "-2"], "between -1 and 16"),
        (["--max_pixels", "lots"], "invalid int value"),
        (["--log_level", "loud"], "invalid choice"),
    ],
)
def test_bad_extract_values_one_line(argv, message, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = main(["extract", "--source", str(corpus), "--output", str(out), *argv], capsys)
    assert code == 2
    assert err.startswith("biomedica extract: error: ") and err.count("\n") == 1
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_bad_shard_values_one_line(dataset, tmp_path, capsys):
    extracted = dataset.parent / "extracted"
    for flag, value in (("--samples_per_shard", "0"), ("--max_caption_chars", "-5")):
        out = tmp_path / "out"
        argv = ["shard", "--input", str(extracted), "--output", str(out), flag, value]
        code, _, err = main(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and flag in err
        assert not out.exists()


def test_unreachable_bucket_one_line(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shown = command(
        "pipelines.extract",
        "--source", "s3://no-such-bucket",
        "--s3_endpoint_url", f"http://127.0.0.1:{port}",
        "--s3_anonymous", "true",
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert shown.returncode == 1
    [line] = error_lines(shown.stderr)
    assert line.startswith("biomedica extract: error: ") and f"127.0.0.1:{port}" in line


def test_unwritable_output_one_line_traceback_on_debug(corpus, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    argv = ["pipelines.extract", "--source", str(corpus), "--output", str(blocker / "out")]
    shown = command(*argv)
    assert shown.returncode == 1
    assert error_lines(shown.stderr) == [
        f"biomedica extract: error: Not a directory: {blocker / 'out'} "
        "(--log_level DEBUG shows the traceback)"
    ]
    debug = command(*argv, "--log_level", "DEBUG")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def _limit_file_size():
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))


def test_full_disk_one_line_and_no_corrupt_file(corpus, tmp_path):
    """A file-size limit fails writes midway as a full disk does."""
    out = tmp_path / "out"
    shown = command(
        "pipelines.extract", "--source", str(corpus), "--output", str(out), "--log_level", "ERROR",
        preexec_fn=_limit_file_size,
    )  # fmt: skip
    assert shown.returncode == 1
    assert shown.stderr.splitlines() == [  # ERROR: no progress either
        "biomedica extract: error: OSError: [Errno 27] File too large "
        "(--log_level DEBUG shows the traceback)"
    ]
    finals = [p for p in out.rglob("*.parquet") if p.parent.name in ("articles", "figures")]
    for path in finals:  # whatever bears a final name is whole
        pq.read_table(path)
    assert not (out / "run_report.json").exists()
    assert not (out / LOCK_FILE).exists()


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_ctrl_c_exits_130_with_one_line(mode, corpus, tmp_path):
    out = tmp_path / "out"
    argv = ["--source", str(corpus), "--output", str(out), "--direct_running_mode", mode]
    if mode == "multi_processing":
        argv += ["--direct_num_workers", "2"]
    running = subprocess.Popen(
        [sys.executable, "-m", "pipelines.extract", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), progress.INTERVAL: "0.1"},
        start_new_session=True,
    )
    first = running.stderr.readline()  # the run has started: progress shows
    assert PROGRESS.match(first), first
    os.killpg(running.pid, signal.SIGINT)  # as a terminal does: to every process of the job
    _, err = running.communicate(timeout=120)
    assert running.returncode == 130
    assert error_lines(err) == ["biomedica extract: interrupted"]
    assert not (out / LOCK_FILE).exists()


# ---- 4. --where checked against the schema; nothing selected ----------------------------


@pytest.mark.parametrize(
    "where, message",
    [
        ("article_year >= '2020'", "article_year is a number but '2020' is text"),
        ("'2020' < article_year", "compare it with 2020"),
        ("article_pmid == 123", "compare it with '123'"),
        ("article_retracted == 'no'", "write article_retracted or not article_retracted"),
        ("2020 in article_mesh_terms", "write '2020' in article_mesh_terms"),
        ("article_year in ('2020', '2021')", "write article_year in (2020, 2021)"),
        ("'x' in article_year", "`in` needs a list field or text"),
        ("image_primary_label in ('Microscopy',)", "any_of(image_primary_label"),
        ("len(caption) > '3'", "compare it with 3"),
        ("article_year > None", "None compares only with == or !="),
        ("article_year + 1 > 2020", "unsupported syntax 'article_year + 1'"),
        ("caption[0] == 'x'", "unsupported syntax 'caption[0]'"),
    ],
)
def test_where_checked_against_field_types(where, message):
    with pytest.raises(FilterError) as refused:
        compile_where(where, SHARD_INDEX_SCHEMA)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value) and "Name(" not in str(refused.value)


@pytest.mark.parametrize(
    "where",
    [
        "article_year >= 2020 and 'Neoplasms' in article_mesh_terms",
        "article_year in (2020, 2021) or article_doi == None",
        "'CD8' in caption or contains(lower(article_title), 'immun')",
        "any_of(image_primary_label, ['Microscopy']) and not article_retracted",
        "len(article_keywords) > 2 and article_retracted == False",
    ],
)
def test_where_that_fits_the_types_compiles(where):
    compile_where(where, SHARD_INDEX_SCHEMA)


def test_subset_where_refused_in_one_line(dataset, tmp_path, capsys):
    out = tmp_path / "sub"
    argv = ["subset", "--input", str(dataset), "--output", str(out)]
    code, _, err = main([*argv, "--where", "article_year >= '2020'"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "biomedica subset: error: --where: article_year is a number" in err
    assert not out.exists()


def test_subset_selecting_nothing_fails_unless_allowed(dataset, tmp_path, capsys):
    argv = ["subset", "--input", str(dataset), "--where", "article_year < 1000"]
    code, _, err = main([*argv, "--output", str(tmp_path / "a"), "--log_level", "ERROR"], capsys)
    assert code == 1
    assert error_lines(err) == [
        f"biomedica subset: error: nothing written: --where matched none of the "
        f"{json.loads((dataset / 'manifest.json').read_text())['totals']['samples']:,} "
        f"samples of {dataset}; pass --allow_empty if that is expected"
    ]
    code, out, err = main(
        [*argv, "--output", str(tmp_path / "b"), "--allow_empty", "--log_level", "ERROR"], capsys
    )
    assert code == 0 and "nothing written" in err
    assert json.loads(out)["stages"]["subset"]["out"] == 0


def test_shard_of_an_empty_input_fails_unless_allowed(tmp_path, capsys):
    from transforms.records import FIGURE_SCHEMA

    figures = tmp_path / "run" / "extract" / "figures"
    figures.mkdir(parents=True)
    pq.write_table(FIGURE_SCHEMA.empty_table(), figures / "part-0.parquet")
    argv = ["shard", "--input", str(tmp_path / "run"), "--log_level", "ERROR"]
    code, _, err = main([*argv, "--output", str(tmp_path / "a")], capsys)
    assert code == 1 and "nothing written: the input holds no figure sample" in err
    code, _, err = main([*argv, "--output", str(tmp_path / "b"), "--allow_empty"], capsys)
    assert code == 0 and "biomedica shard: nothing written" in err


# ---- 5. progress ---------------------------------------------------------------------------


def test_progress_adds_up_multi_processing_workers(corpus, tmp_path):
    out = tmp_path / "out"
    shown = command(
        "pipelines.extract", "--source", str(corpus), "--output", str(out),
        "--direct_running_mode", "multi_processing", "--direct_num_workers", "2",
        env={progress.INTERVAL: "0.2"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    report = json.loads((out / "run_report.json").read_text())
    lines = [line for line in shown.stderr.splitlines() if PROGRESS.match(line)]
    assert lines, shown.stderr
    last = re.search(r"  ([\d,]+) articles \([\d.]+/s\)  ([\d,]+) figures$", lines[-1])
    articles = report["stages"]["extract_articles"]["out"]
    assert articles > 0 and int(last.group(1).replace(",", "")) == articles
    assert int(last.group(2).replace(",", "")) == report["stages"]["extract_figures"]["in"]


class _Terminal:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_redraws_a_bar_on_a_terminal(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL, "0.05")
    screen = _Terminal()
    reporter = progress.Reporter("shard", ["samples", "shards"], total=40, stream=screen).start()
    progress.tick("samples", 10)
    time.sleep(0.3)
    reporter.stop()
    assert screen.text.startswith("\r\x1b[K") and screen.text.endswith("\n")
    assert "[#####...............]  25% of 40  10 samples" in screen.text
    assert progress.PROGRESS_DIR not in os.environ  # the run's environment is restored


def test_progress_never_fails_a_run(monkeypatch, tmp_path):
    monkeypatch.setenv(progress.PROGRESS_DIR, str(tmp_path / "a_file" / "gone"))
    (tmp_path / "a_file").write_text("")
    progress.tick("articles")  # cannot write its counts: ignored


# ---- 6. sample into a non-empty folder ----------------------------------------------------


def test_sample_refuses_a_non_empty_output_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "corpus"
    argv = ["sample", "--output", str(out), "--articles", "1", "--image_side", "64"]
    assert main(argv, capsys)[0] == 0
    first = sorted(p.name for p in out.iterdir())
    code, _, err = main(argv, capsys)
    assert code == 1 and err.count("\n") == 1 and "--overwrite" in err
    code, _, _ = main([*argv, "--overwrite", "--start_pmcid", "123"], capsys)
    assert code == 0
    now = sorted(p.name for p in out.iterdir())
    assert "PMC123.1" in now and not set(first) - set(now) - {"PMC9000001.1"}
    assert "PMC9000001.1" not in now  # the older corpus's article went


@pytest.mark.parametrize("extra", ["notes.txt", "PMC5.1", None])
def test_sample_overwrite_clears_only_a_sample_corpus(extra, tmp_path, capsys):
    out = tmp_path / "corpus"
    argv = ["sample", "--output", str(out), "--articles", "1", "--image_side", "64"]
    if extra is None:  # not a corpus at all: a project folder
        out.mkdir()
        (out / "README.md").write_text("mine")
        (out / "metadata").mkdir()
    else:  # a corpus with something else beside it (a file under an article's name too)
        assert main(argv, capsys)[0] == 0
        (out / extra).write_text("mine")
    before = files_under(out)
    code, _, err = main([*argv, "--overwrite"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "--overwrite clears only a sample corpus" in err
    assert (extra or "README.md") in err
    assert files_under(out) == before  # nothing removed


def test_sample_overwrite_of_the_working_directory_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "src.py").write_text("print()")
    monkeypatch.chdir(tmp_path)
    code, _, err = main(["sample", "--output", ".", "--articles", "1", "--overwrite"], capsys)
    assert code == 1 and "src.py" in err and "no sample_manifest.json" in err
    assert (tmp_path / "src.py").read_text() == "print()"


# ---- 7. dataset card -------------------------------------------------------------------------


def _shard(group: str, index: int) -> dict:
    return {"group": group, "index": index, "path": f"webdataset/{group}/{index:06d}.tar"}


def test_card_loading_snippet_names_the_real_shards():
    manifest = {
        "shards": [_shard("commercial", i) for i in range(12)]
        + [_shard("other", 0)]
        + [_shard("noncommercial", i) for i in (0, 1, 2, 5)],
        "groups": {
            "commercial": {"shards": 12, "samples": 12_000, "bytes": 1},
            "noncommercial": {"shards": 4, "samples": 3_500, "bytes": 1},
            "other": {"shards": 1, "samples": 7, "bytes": 1},
        },
        "totals": {"shards": 17, "samples": 15_507, "bytes": 3},
        "source": "extract output",
        "parameters": {},
    }
    assert dataset_card.shard_urls(manifest) == {
        "commercial": "webdataset/commercial/{000000..000011}.tar",
        "other": "webdataset/other/000000.tar",
        "noncommercial": "webdataset/noncommercial/{000000..000002}.tar"
        "::webdataset/noncommercial/000005.tar",
    }
    card = dataset_card.build_card(manifest, [(("commercial", "J", "2020"), 12_000)])
    text = card[dataset_card.CARD].decode()
    assert "{000000..000009}" not in text
    assert "'commercial': 'webdataset/commercial/{000000..000011}.tar',  # 12 shards" in text
    assert "'other': 'webdataset/other/000000.tar',  # 1 shards, 7 samples" in text


def test_card_of_a_real_dataset_loads_every_sample(dataset):
    import webdataset as wds

    manifest = json.loads((dataset / "manifest.json").read_text())
    text = (dataset / "README.md").read_text()
    for group, url in dataset_card.shard_urls(manifest).items():
        assert repr(url) in text
        samples = sum(1 for _ in wds.WebDataset(str(dataset / url), shardshuffle=False))
        assert samples == manifest["groups"][group]["samples"]


def test_chart_counts_have_whole_ticks():
    figure = dataset_card._bar_figure([("J1", 1), ("J2", 2)], "journals", horizontal=True)
    figure.canvas.draw()
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)
    figure = dataset_card._bar_figure([("2020", 3)], "years")
    figure.canvas.draw()
    assert all(float(t).is_integer() for t in figure.axes[0].get_yticks())


# ---- 8. outputs that overlap inputs ---------------------------------------------------------


@pytest.mark.parametrize(
    "output, source, overlaps",
    [
        ("data/ds", "data/ds", True),
        ("data/ds/", "./data/ds", True),
        ("data/ds/subset", "data/ds", True),
        ("data", "data/ds", True),
        ("data/ds2", "data/ds", False),
        ("data/ds/x", "data/ds/*.tar.gz", False),  # beside the files the glob matches
        ("data/ds/x.tar.gz", "data/ds/*.tar.gz", True),
        ("data/ds", "data/ds/*.tar.gz", True),
        ("data/ds/a", "data/ds/a*/*.tar.gz", True),  # holds files the glob matches
        ("data/ds/a/b", "data/ds/a*/*.tar.gz", False),
        ("data/ds/x", "data/ds/**/*.tar.gz", True),
        ("data/out", "data/in/*.tar.gz", False),
        ("gs://b/ds/sub", "gs://b/ds", True),
        ("gs://b/ds", "gs://b/ds/", True),
        ("gs://b", "gs://b/ds", True),
        ("gs://b/ds2", "gs://b/ds", False),
        ("gs://c/ds", "gs://b/ds", False),
        ("s3://b/run", "s3://b/run/extract/figures/*.parquet", True),
        ("S3://b/run", "s3://b/run", True),
        ("s3://b/ds", "gs://b/ds", False),
    ],
)
def test_overlapping_output_refused(output, source, overlaps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if overlaps:
        with pytest.raises(SystemExit, match="write to a folder outside it"):
            refuse_overlap(output, source=source)
    else:
        refuse_overlap(output, source=source)


def test_overlap_through_a_symlink_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(SystemExit, match="is --input"):
        refuse_overlap(str(tmp_path / "link"), input=str(tmp_path / "data"))


@pytest.mark.parametrize("where", ["same", "inside"])
def test_subset_onto_its_input_leaves_it_whole(where, dataset, capsys):
    before = files_under(dataset)
    out = dataset if where == "same" else dataset / "sub"
    argv = ["subset", "--input", str(dataset), "--output", str(out), "--where", "True"]
    code, _, err = main([*argv, "--overwrite"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--output" in err
    assert files_under(dataset) == before


def test_extract_and_shard_refuse_overlaps(corpus, dataset, capsys):
    code, _, err = main(
        ["extract", "--source", str(corpus), "--output", str(corpus.parent)], capsys
    )
    assert code == 2 and "contains --source" in err
    extracted = dataset.parent / "extracted"
    code, _, err = main(["shard", "--input", str(extracted), "--output", str(extracted)], capsys)
    assert code == 2 and "is --input" in err


# ---- 9. one run per output -------------------------------------------------------------------


def _dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def _lock(folder: Path, **fields) -> dict:
    held = {"run_id": "other-run", "host": socket.gethostname(), "pid": os.getpid()}
    held.update({"heartbeat": time.time(), "started": time.time(), **fields})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps(held))
    return held


def test_lock_refuses_a_second_run_and_is_released(tmp_path):
    first = RunLock(str(tmp_path))
    with first:
        with pytest.raises(LockError, match=f"in use by run {first.run_id}"):
            RunLock(str(tmp_path)).acquire()
        first.check()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(str(tmp_path)):  # free again
        pass


def test_lock_taken_over_when_stale(tmp_path, caplog):
    _lock(tmp_path, pid=_dead_pid())
    with RunLock(str(tmp_path)) as mine:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["run_id"] == mine.run_id
    assert "stale lock of run other-run" in caplog.text and "is gone" in caplog.text
    _lock(tmp_path, host="elsewhere", heartbeat=time.time() - 3600)
    with RunLock(str(tmp_path)):
        pass
    (tmp_path / LOCK_FILE).write_text("{not json")  # a lock nobody can read protects nothing
    with RunLock(str(tmp_path)):
        pass
    _lock(tmp_path, host="elsewhere", pid=1)  # live elsewhere: a pid here says nothing
    with pytest.raises(LockError, match="other-run"):
        RunLock(str(tmp_path)).acquire()


def test_lock_heartbeat_and_loss_detected(tmp_path):
    lock = RunLock(str(tmp_path), heartbeat_seconds=0.05)
    lock.acquire()
    beat = json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"]
    time.sleep(0.3)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"] > beat
    _lock(tmp_path, run_id="intruder")
    with pytest.raises(LockError, match="lost its lock to run intruder"):
        lock.check()
    lock.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["run_id"] == "intruder"  # not ours


def test_run_refused_while_another_holds_the_output(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "extract").mkdir(parents=True)
    (out / "extract" / "staging_of_the_other_run").write_text("x")
    held = _lock(out)
    argv = ["extract", "--source", str(corpus), "--output", str(out), "--overwrite"]
    code, _, err = main(argv, capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"in use by run other-run (host {held['host']}, pid {os.getpid()})" in err
    assert (out / "extract" / "staging_of_the_other_run").exists()
    assert json.loads((out / LOCK_FILE).read_text()) == held


def test_stale_lock_of_a_killed_run_taken_over(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    _lock(out, pid=_dead_pid())
    code, _, err = main(
        ["extract", "--source", str(corpus), "--output", str(out), "--log_level", "ERROR"], capsys
    )
    assert code == 0, err
    assert not (out / LOCK_FILE).exists()


def test_lock_on_gcs():
    from conftest import gcs_emulator

    with gcs_emulator("locks"):
        output = "gs://locks/run"
        first = RunLock(output)
        with first:
            with pytest.raises(LockError, match=f"in use by run {first.run_id}"):
                RunLock(output).acquire()
            first.check()
        with RunLock(output):  # released: free again
            pass
        assert not storage.exists(f"{output}/{LOCK_FILE}")


# ---- 10. the lock is exclusive and conditional; a lost lock fails the run; Ctrl-C ----------


@pytest.fixture
def s3_output(monkeypatch):
    """An s3:// output on a moto server that honours If-None-Match and If-Match."""
    from conftest import moto_s3

    with moto_s3() as (endpoint, client):
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(storage._local, "s3", {}, raising=False)  # clients of this server
        client.create_bucket(Bucket="locks")
        yield "s3://locks/run", client


@pytest.fixture
def gcs_output(monkeypatch):
    """A gs:// output on the gcp-storage-emulator, taught the ifGenerationMatch precondition
    of real GCS (the emulator ignores it) for uploads and deletes."""
    from http import HTTPStatus

    from conftest import gcs_emulator
    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound

    def generation(request, storage, name) -> str:
        try:
            return str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
        except NotFound:
            return "0"

    def guarded(handler, name_of):
        def handle(request, response, storage, *args, **kwargs):
            wanted = request.query.get("ifGenerationMatch")
            if wanted and generation(request, storage, name_of(request)) != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
            return handler(request, response, storage, *args, **kwargs)

        return handle

    def upload_name(request):
        if "name" in request.query:
            return request.query["name"][0]
        return request.data["meta"].get("name")

    for _, methods in server.HANDLERS:
        if methods.get(server.POST) is server.objects.insert:
            monkeypatch.setitem(methods, server.POST, guarded(methods[server.POST], upload_name))
        if methods.get(server.DELETE) is server.objects.delete:
            guard = guarded(methods[server.DELETE], lambda r: r.params["object_id"])
            monkeypatch.setitem(methods, server.DELETE, guard)
    with gcs_emulator("locks"):
        yield "gs://locks/run"


def _held_by(output: str) -> str:
    return json.loads(storage.read_bytes(storage.join(output, LOCK_FILE)))["run_id"]


def _intrude(output: str, run_id: str = "intruder") -> None:
    """Another run's lock replaces this one's (as a takeover does: a new file or object)."""
    uri = storage.join(output, LOCK_FILE)
    record = {"run_id": run_id, "host": "elsewhere", "pid": 1}
    record.update({"heartbeat": time.time(), "started": time.time()})
    if "://" not in uri and os.path.exists(uri):
        os.remove(uri)
    storage.write_bytes(uri, json.dumps(record).encode())


def _where(kind: str, tmp_path, request) -> str:
    if kind == "local":
        return str(tmp_path / "out")
    if kind == "s3":
        return request.getfixturevalue("s3_output")[0]
    return request.getfixturevalue("gcs_output")


@pytest.mark.parametrize("kind", ["local", "s3", "gs"])
def test_lock_created_only_if_absent(kind, tmp_path, request):
    output = _where(kind, tmp_path, request)
    late = RunLock(output)
    late._read = lambda: None  # it looked before the other run created the lock
    with RunLock(output) as first:
        with pytest.raises(LockError, match="was just taken by run"):
            late.acquire()
        assert _held_by(output) == first.run_id  # not overwritten
        first.check()
    assert not storage.exists(storage.join(output, LOCK_FILE))


@pytest.mark.parametrize("kind", ["local", "s3", "gs"])
def test_heartbeat_never_overwrites_a_lock_taken_over(kind, tmp_path, request):
    output = _where(kind, tmp_path, request)
    lock = RunLock(output, heartbeat_seconds=0.05)
    lock.acquire()
    mine = lock._read()
    lock._read = lambda: mine  # it looked just before the other run took over
    _intrude(output)
    time.sleep(0.5)
    assert _held_by(output) == "intruder"
    assert "lost its lock" in lock.lost
    with pytest.raises(LockError, match="lost its lock"):
        lock.check()
    lock.release()
    assert _held_by(output) == "intruder"  # the other run's lock stays


def test_assert_held_in_other_processes(tmp_path):
    from transforms.run_lock import assert_held

    _lock(tmp_path, run_id="the-run")
    assert_held(str(tmp_path), "the-run")
    with pytest.raises(LockError, match="lost its lock to run the-run"):
        assert_held(str(tmp_path), "another")
    (tmp_path / LOCK_FILE).unlink()
    with pytest.raises(LockError, match="no run holds"):
        assert_held(str(tmp_path))


class _Steal:
    """A DoFn that lets another run take the output over, then moves a file into place."""

    def __init__(self, output: str):
        self.output = output

    def __call__(self, element):
        from transforms.run_lock import assert_held

        _intrude(self.output, "other-run")
        time.sleep(0.5)  # heartbeats every 0.05 s here
        assert_held(self.output)
        (Path(self.output) / "final.txt").write_text("moved into place")
        return element


def _pipeline_run(output: Path, step, cleanup=("_work",)):
    """A `run` for main_of: one element through `step`, its work folder made first."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.runner import make_pipeline, output_lock, run_and_report

    def run(argv):
        with output_lock(str(output)) as lock:
            (output / "_work").mkdir()
            (output / "_work" / "piece").write_text("x")
            p = make_pipeline(PipelineOptions([]))
            p | beam.Create([1]) | beam.Map(step)
            return run_and_report(p, str(output), time.time(), list(cleanup), lock)

    return run


def test_lost_lock_fails_the_run_before_its_final_moves(tmp_path, monkeypatch, capsys):
    from pipelines.runner import main_of
    from transforms import run_lock

    monkeypatch.setattr(run_lock, "HEARTBEAT_SECONDS", 0.05)
    out = tmp_path / "out"
    out.mkdir()
    code = main_of(_pipeline_run(out, _Steal(str(out))), "extract")([])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == [
        f"biomedica extract: error: {out}: this run ("
        + err.split("this run (")[1].split(")")[0]
        + ") lost its lock to run other-run"
    ]
    assert not (out / "final.txt").exists()
    assert (out / "_work" / "piece").exists()  # the other run's now: left alone
    assert _held_by(str(out)) == "other-run"


def _write_dead_letters(out, guard):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from transforms.records import DeadLetter
    from transforms.sinks import WriteDeadLetters

    with beam.Pipeline(runner=FnApiRunner()) as p:
        letters = p | beam.Create([DeadLetter("extract_figures", "PMC1_F1", "image_missing")])
        letters | WriteDeadLetters(str(out / "dead_letter"), guard=guard)


def test_final_moves_check_the_lock(tmp_path):
    from transforms import run_lock

    out = tmp_path / "out"
    guard = run_lock.Guard(str(out), "this-run")
    with run_lock.RunLock(str(out), run_id="other-run"):  # another run holds the output
        with pytest.raises(Exception, match="lost its lock to run other-run"):
            _write_dead_letters(out, guard)
    assert not list((out / "dead_letter").glob("dead_letters-*.jsonl"))
    with run_lock.RunLock(str(out), run_id="this-run"):
        _write_dead_letters(out, guard)
    assert len(list((out / "dead_letter").glob("dead_letters-*.jsonl"))) == 1


def _interrupt(element):
    raise KeyboardInterrupt  # Ctrl-C while a bundle runs in the launcher's process


def _interrupt_in_worker_thread(element):
    raise RuntimeError("KeyboardInterrupt")  # as Beam re-raises one from a worker thread


def _fail(element):
    raise ValueError("bad element")


@pytest.mark.parametrize(
    "step, code, line",
    [
        (_interrupt, 130, "biomedica extract: interrupted"),
        (_interrupt_in_worker_thread, 130, "biomedica extract: interrupted"),
        (_fail, 1, "biomedica extract: error: ValueError: bad element"),
    ],
)
def test_interrupted_or_failed_run_one_line_and_no_work_left(step, code, line, tmp_path, capsys):
    from pipelines.runner import main_of

    out = tmp_path / "out"
    out.mkdir()
    assert main_of(_pipeline_run(out, step), "extract")([]) == code
    assert capsys.readouterr().err.splitlines()[0].startswith(line)
    assert not (out / "_work").exists() and not (out / LOCK_FILE).exists()


def test_interrupt_quiet_about_the_worker_channel_it_closed(capsys, monkeypatch):
    import threading

    import grpc

    from pipelines.runner import main_of

    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)  # prints, as in use

    def run(argv):
        def read_control():
            raise grpc.RpcError()  # a multi_processing worker's channel, closed by Ctrl-C

        reader = threading.Thread(target=read_control, name="beam_control_read")
        reader.start()
        reader.join()
        raise KeyboardInterrupt

    assert main_of(run, "extract")([]) == 130
    assert capsys.readouterr().err.splitlines() == ["biomedica extract: interrupted"]
