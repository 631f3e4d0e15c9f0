"""`biomedica enrich`: MeSH terms, publication types and chemicals from PubMed for the articles
of an extract output, matched by PMID.

    biomedica enrich --input out/run --output out/enriched --medline 'pubmed/pubmed25n*.xml.gz'
    biomedica enrich --input out/run --output out/enriched --eutils --ncbi_email you@lab.org

Writes under --output: extract/articles/<the input's file names> (every article row, its
PubMed columns filled; see transforms.records.PUBMED_COLUMNS), extract/figures.json (the link
to the input's figures, which are not copied: transforms.extract_layout), dead_letter/*.jsonl
and run_report.json. shard, embed and annotate take --output as they take an extract output.
With --eutils, fetched records are cached in <--output>/pubmed_cache (or --eutils_cache).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import posixpath
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import S3Options

from pipelines.flags import UsageError
from pipelines.options import EnrichOptions
from pipelines.runner import (
    REPORT,
    input_layout,
    job_options,
    main_of,
    make_pipeline,
    nothing_selected,
    output_lock,
    prepare_output,
    progress,
    refuse_overlap,
    run_and_report,
)
from transforms import extract_layout, report, run_lock, storage
from transforms.outcomes import DEAD
from transforms.pubmed import eutils, stage
from transforms.pubmed.medline import file_order_key
from transforms.shard.write_shards import count_rows
from transforms.sinks import WriteDeadLetters

OUTPUT_PARTS = [extract_layout.EXTRACT, "dead_letter"]
CACHE = "pubmed_cache"


def source_layout(source: str, s3: storage.S3Config) -> tuple[extract_layout.Layout, dict]:
    """The input's layout and the link the output keeps to its figures."""
    found = input_layout(source, s3)
    if found is None:
        raise UsageError(f"--input {source}: give the extract output folder, not a file or glob")
    try:
        return found, extract_layout.link_for(found, s3)
    except extract_layout.LinkError as err:
        raise SystemExit(str(err)) from None


def article_files(found: extract_layout.Layout, s3, allow_empty: bool) -> list[str]:
    uris = sorted(f.uri for f in storage.glob(storage.join(found.articles, "*.parquet"), s3))
    if not uris and not allow_empty:
        raise SystemExit(
            f"no articles files at {found.articles}: --input holds no article (an extract that "
            "found nothing new writes none); pass --allow_empty to write an empty output"
        )
    return uris


# What a MEDLINE file is named: NLM's `.xml.gz`, or a plain `.xml`. Anything else a glob
# matches (NLM's `.md5` sidecars, a README) is left out, and said.
MEDLINE_SUFFIXES = (".xml.gz", ".xml")


def medline_files(globs: list[str], s3) -> list[str]:
    """Every MEDLINE file the --medline globs match, in PubMed's order; refused where none
    matches, or where two share a name (a record's source is its file's name: two would be
    one). Folders and other files a glob matches are left out with a warning."""
    uris: dict[str, str] = {}
    skipped = []
    for pattern in globs:
        matched = storage.glob(pattern, s3)
        if not matched:
            raise UsageError(f"--medline {pattern} matches no file")
        for found in matched:
            name = posixpath.basename(found.uri)
            local_folder = "://" not in found.uri and os.path.isdir(found.uri)
            if local_folder or not name.lower().endswith(MEDLINE_SUFFIXES):
                skipped.append(found.uri)
                continue
            if name in uris and uris[name] != found.uri:
                raise UsageError(
                    f"--medline: {uris[name]} and {found.uri} have one name; a record's "
                    "version is told by its file's name (give each MEDLINE file once)"
                )
            uris[name] = found.uri
    if skipped:
        logging.warning(
            "--medline: left out %d matches that are not MEDLINE files (*.xml.gz, *.xml), e.g. %s",
            len(skipped),
            skipped[0],
        )
    if not uris:
        raise UsageError(f"--medline {' '.join(globs)} matches no MEDLINE file (*.xml.gz, *.xml)")
    return [uris[name] for name in sorted(uris, key=file_order_key)]


def _eutils_defaults() -> dict:
    """Each E-utilities flag's default (EnrichOptions' own): given with --medline, a value
    other than it would do nothing."""
    parser = argparse.ArgumentParser(add_help=False)
    EnrichOptions._add_argparse_args(parser)
    return {a.dest: a.default for a in parser._actions if a.dest not in ("medline", "eutils")}


def refuse_eutils_flags(enrich: EnrichOptions) -> None:
    defaults = _eutils_defaults()
    given = [f"--{f}" for f, default in defaults.items() if getattr(enrich, f) != default]
    if given:
        raise UsageError(f"{', '.join(given)} apply to --eutils only, not --medline")


def check_cache(cache: str, s3) -> None:
    """The cache folder takes a file, before any request: a probe written and removed."""
    probe = storage.join(cache, f".probe-{os.getpid()}")
    try:
        storage.write_bytes(probe, b"", s3)
        storage.remove(probe, s3)
    except Exception as err:  # noqa: BLE001 (any storage failure says the same)
        raise UsageError(f"--eutils_cache {cache} cannot be written: {err}") from None


def eutils_settings(enrich: EnrichOptions, output: str, s3) -> dict:
    """EutilsClient's arguments from the flags (and $NCBI_EMAIL / $NCBI_API_KEY)."""
    email = enrich.ncbi_email or os.environ.get("NCBI_EMAIL", "")
    if not email or "@" not in email:
        raise UsageError(
            "--eutils needs --ncbi_email (or $NCBI_EMAIL): NCBI asks every E-utilities "
            "request to carry a contact email"
        )
    if not enrich.eutils_base_url.startswith(("http://", "https://")):
        raise UsageError(f"--eutils_base_url {enrich.eutils_base_url} is not an http(s) URL")
    if enrich.eutils_max_retries < 0:
        raise UsageError(f"--eutils_max_retries must be >= 0, not {enrich.eutils_max_retries}")
    if not math.isfinite(enrich.eutils_timeout) or enrich.eutils_timeout <= 0:
        raise UsageError(f"--eutils_timeout must be a positive number, not {enrich.eutils_timeout}")
    cache = enrich.eutils_cache or storage.join(output, CACHE)
    return {
        "base_url": enrich.eutils_base_url,
        "api_key": enrich.ncbi_api_key or os.environ.get("NCBI_API_KEY") or None,
        "email": email,
        "cache_dir": eutils.RecordCache(cache, s3),
        "timeout": enrich.eutils_timeout,
        "max_retries": enrich.eutils_max_retries,
    }


def build(p, articles: list[str], output: str, header: dict, kind: str, records, s3, guard):
    """Wire the stage, its dead letters and the run report. `records`: MEDLINE file URIs
    (kind "medline") or EutilsClient settings (kind "eutils")."""
    directory = storage.join(output, extract_layout.EXTRACT, extract_layout.ARTICLES)
    medline, settings = (records, None) if kind == "medline" else (None, records)
    enriched = (
        p
        | "ArticlesFiles" >> beam.Create(articles)
        | "Enrich" >> stage.EnrichArticles(directory, medline, settings, s3, guard)
    )
    dead_letters = storage.join(output, "dead_letter")
    enriched[DEAD] | "WriteDead" >> WriteDeadLetters(dead_letters, guard=guard)
    counts = (
        enriched[stage.COUNTS],
        enriched[DEAD] | "DeadCounts" >> beam.FlatMap(report.dead_letter_counts),
    )
    terms = {**stage.STAGES, **stage.SOURCE_STAGES[kind]}
    (
        counts
        | "AllCounts" >> beam.Flatten()
        | "RunReport" >> report.WriteRunReport(storage.join(output, REPORT), terms, header)
    )


def run(argv=None, test_pipeline=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    given, options, opts, source = job_options("enrich", argv, __doc__)
    enrich = options.view_as(EnrichOptions)
    s3 = storage.S3Config(endpoint_url=options.view_as(S3Options).s3_endpoint_url or None)
    if bool(enrich.medline) == bool(enrich.eutils):
        raise UsageError("give --medline GLOB or --eutils (one of them)")
    found, link = source_layout(source, s3)
    for pattern in enrich.medline or []:
        refuse_overlap(opts.output, medline=pattern)
    if enrich.medline:
        refuse_eutils_flags(enrich)
        kind, records = "medline", medline_files(enrich.medline, s3)
        parameters = {"medline_files": len(records)}
    else:
        kind, records = "eutils", eutils_settings(enrich, opts.output, s3)
        parameters = {
            "eutils_base_url": records["base_url"],
            "eutils_cache": records["cache_dir"].root,
            "ncbi_api_key": bool(records["api_key"]),  # whether one was given, never the key
        }
    if enrich.eutils_cache:  # its own folder: never inside what this run reads
        for read in (source, link["figures"]):
            try:
                refuse_overlap(enrich.eutils_cache, input=read)
            except UsageError:
                raise UsageError(
                    f"--eutils_cache {enrich.eutils_cache} overlaps {read}, which this run "
                    "reads; keep the cache in a folder of its own"
                ) from None
    articles = article_files(found, s3, given.allow_empty)
    header = {
        "pipeline": "enrich",
        "input": source,
        "output": opts.output,
        "figures": link["figures"],
        "parameters": {"source": kind, **parameters, "articles_files": len(articles)},
    }
    p = make_pipeline(options, test_pipeline)
    run_id = run_lock.new_run_id()
    guard = run_lock.Guard(opts.output, run_id)
    build(p, articles, opts.output, header, kind, records, s3, guard)
    with output_lock(opts.output, run_id) as lock:
        prepare_output(opts.output, REPORT, opts.overwrite, OUTPUT_PARTS)
        if kind == "eutils":
            check_cache(records["cache_dir"].root, s3)
        extract_layout.write_link(opts.output, link, s3)
        sources = ["MEDLINE files", "PubMed records"] if kind == "medline" else ["PMIDs"]
        shown = progress(opts.log_level, "enrich", ["articles", *sources], count_rows(articles))
        result = run_and_report(p, opts.output, time.time(), [], lock, shown)
    return nothing_selected(result, stage.STAGE, "no article was enriched", given.allow_empty)


main = main_of(run, "enrich")


if __name__ == "__main__":
    sys.exit(main())
