"""The enrich stage on Beam: PubMed records (from MEDLINE files or E-utilities) joined with the
articles of an extract output by PMID, and the articles files written again with their PubMed
columns.

    articles files -ArticlePmids-> (pmid, (file, row)) -----------+
         |                                                        CoGroupByKey(pmid)
         +-> DistinctPmids (side input)                           -ResolvePmid-> (file, row values)
    MEDLINE files -ParseMedlineFiles-> (pmid, version) -----------+              |
      or every PMID -FetchFromEutils (one process)-> (pmid, record | failure)    |
    articles files ------------------------------------------- CoGroupByKey(file) -WriteEnrichedFile

The join is Beam's shuffle: a worker holds one PMID's versions, one articles file's joined
rows, and the sorted array of the PMIDs the articles name (8 bytes each), never a map of
PubMed. The MEDLINE files' failures reach the join as a side input of file names.
E-utilities calls come from one process (one element holds every PMID), as NCBI's rate limit
is per client.
"""

from __future__ import annotations

import io
import posixpath

import apache_beam as beam
import numpy as np

from transforms import progress, storage
from transforms.outcomes import DEAD, dead
from transforms.pubmed import article_rows, join
from transforms.pubmed.eutils import EutilsClient
from transforms.pubmed.medline import MedlineError, parse_medline, read_medline
from transforms.records import PubmedRecord

STAGE = "enrich"  # articles: in = out + those of files found damaged when rewritten
FILES = "enrich_files"  # articles files: in = out + dead letters (unreadable)
MEDLINE = "medline"  # MEDLINE files: in = out + dead letters (malformed)
EUTILS = "eutils"  # PMIDs asked: in = out (found or not found) + dead letters (failed)
STAGES = {
    STAGE: ("out", "dead_letter"),
    FILES: ("out", "dead_letter"),
}
SOURCE_STAGES = {
    "medline": {MEDLINE: ("out", "dead_letter")},
    "eutils": {EUTILS: ("out", "dead_letter")},
}
COUNTS = "counts"  # (count name, n) pairs for the run report
FAILED = "failed"  # names of MEDLINE files that failed to parse
SCANNED = "scanned"  # (articles file name, rows) of each file the PMID scan read


def _name(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


class ArticlePmids(beam.DoFn):
    """An articles file -> (PMID, (file name, row)) for each row naming a PMID."""

    def process(self, uri: str):
        name = _name(uri)
        try:
            values = article_rows.pmids(uri)
        except Exception as err:  # noqa: BLE001 (a damaged file is data: a dead letter)
            yield dead(FILES, name, "articles_file_unreadable", f"{type(err).__name__}: {err}", uri)
            return
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{STAGE}.in", len(values)))
        yield beam.pvalue.TaggedOutput(SCANNED, (name, len(values)))
        for row, value in enumerate(values):
            pmid, _ = join.parse_pmid(value)
            if pmid is not None:
                yield pmid, (name, row)


class DistinctPmids(beam.CombineFn):
    """PMIDs (ints) -> one sorted array of the distinct ones: 8 bytes a PMID (6.5M PMIDs of
    all PMC-OA: 52 MB), where a Python set would take ten times that."""

    def create_accumulator(self):
        return np.empty(0, np.int64), []

    def add_input(self, accumulator, pmid: int):
        merged, pending = accumulator
        pending.append(pmid)
        if len(pending) >= max(1 << 16, merged.size):  # merges cost O(n) amortised
            return np.union1d(merged, np.asarray(pending, np.int64)), []
        return merged, pending

    def merge_accumulators(self, accumulators):
        parts = [np.asarray(p, np.int64) for a in accumulators for p in a]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64), []

    def extract_output(self, accumulator):
        return self.merge_accumulators([accumulator])[0]


def wanted(pmids: np.ndarray, pmid: str) -> bool:
    """Whether a PMID (PubMed's form: digits, no leading zero) is in the sorted array."""
    if not pmid.isdigit() or len(pmid) > 18:
        return False
    value = int(pmid)
    at = int(np.searchsorted(pmids, value))
    return at < pmids.size and int(pmids[at]) == value


class ParseMedlineFiles(beam.DoFn):
    """A MEDLINE file -> (PMID, PubmedRecord | PubmedDeletion) for the PMIDs some article
    names (`pmids`, a side input from DistinctPmids), streamed: the shuffle carries those
    alone, not all of PubMed (6.5M of 36M records for PMC-OA; a laptop's DirectRunner holds
    its shuffle in memory). A file that fails part way is a dead letter and its name goes to
    FAILED: the join drops what it yielded."""

    def __init__(self, s3: storage.S3Config):
        self.s3 = s3

    def process(self, uri: str, pmids: np.ndarray):
        name = _name(uri)
        records = deletions = unused = 0
        try:
            for item in read_medline(uri, self.s3):
                if isinstance(item, PubmedRecord):
                    records += 1
                else:
                    deletions += 1
                if (records + deletions) % 1000 == 0:
                    progress.tick("PubMed records", 1000)
                if wanted(pmids, item.pmid):
                    yield item.pmid, item
                else:
                    unused += 1
        except MedlineError as err:
            yield dead(MEDLINE, name, err.reason, err.detail, uri)
            yield beam.pvalue.TaggedOutput(FAILED, name)
            yield beam.pvalue.TaggedOutput(COUNTS, (f"{MEDLINE}.records_dropped", records))
            yield beam.pvalue.TaggedOutput(COUNTS, (f"{MEDLINE}.deletions_dropped", deletions))
            return
        progress.tick("PubMed records", (records + deletions) % 1000)
        progress.tick("MEDLINE files")
        for count, n in (("out", 1), ("records", records), ("deletions", deletions)):
            yield beam.pvalue.TaggedOutput(COUNTS, (f"{MEDLINE}.{count}", n))
        # Records and deletions of PMIDs no article names: read, and left out of the join.
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{MEDLINE}.not_wanted", unused))


class FetchFromEutils(beam.DoFn):
    """Every PMID of the run (one element) -> (PMID, PubmedRecord | FetchFailure), fetched in
    batches within NCBI's rate limit, through the cache. `settings`: EutilsClient's
    arguments (base_url, api_key, email, cache_dir, ...)."""

    def __init__(self, settings: dict):
        self.settings = settings

    def setup(self):
        self.client = EutilsClient(**self.settings)

    def process(self, element):
        _, pmids = element
        asked = 0
        for batch in self.client.fetch(sorted(set(pmids), key=int)):
            asked += len(batch.pmids)
            if batch.ok:
                try:
                    found = [
                        item
                        for item in parse_medline(io.BytesIO(batch.xml), "efetch")
                        if isinstance(item, PubmedRecord)
                    ]
                except MedlineError as err:
                    batch_error = ("bad_response", err.detail)
                else:
                    batch_error = None
            else:
                batch_error = (batch.error, batch.detail)
            if batch_error is not None:
                reason, detail = batch_error
                for pmid in batch.pmids:
                    yield pmid, join.FetchFailure(pmid, reason, detail)
                    yield dead(EUTILS, pmid, reason, detail, self.client.efetch_url)
                continue
            wanted = set(batch.pmids)
            answered = {record.pmid for record in found} & wanted
            for record in found:
                yield record.pmid, record
            cached = len(batch.pmids) if batch.from_cache else 0
            for name, n in (
                ("out", len(batch.pmids)),
                ("found", len(answered)),
                ("not_found", len(wanted - answered)),
                ("from_cache", cached),
                ("requests", batch.attempts),
            ):
                if n:
                    yield beam.pvalue.TaggedOutput(COUNTS, (f"{EUTILS}.{name}", n))
            progress.tick("PMIDs", len(batch.pmids))
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{EUTILS}.in", asked))


class ResolvePmid(beam.DoFn):
    """(PMID, {articles: [(file, row)], pubmed: [versions]}) -> (file, (row, columns)) for
    each article naming the PMID: the version that stands, or why none does."""

    def process(self, element, failed):
        pmid, grouped = element
        refs = grouped["articles"]
        if next(iter(refs), None) is None:  # a version of a PMID no article names
            return
        status, record = join.resolve(grouped["pubmed"], set(failed))
        values = join.columns(status, record)
        for name, row in refs:  # iterated, not listed: a PMID many articles name stays cheap
            yield name, (row, values)


class WriteEnrichedFile(beam.DoFn):
    """(file name, {uri: [uri], scanned: [rows], rows: [(row, columns)]}) -> the articles
    file written to `directory`; counts by status. A file found damaged now (the scan read
    its PMIDs alone) is a dead letter, and its rows are counted as such."""

    def __init__(self, directory: str, guard=None):
        self.directory, self.guard = directory, guard

    def process(self, element):
        """Yields (count name, n) pairs, and dead letters of a damaged file."""
        name, grouped = element
        uris, scanned = list(grouped["uri"]), list(grouped["scanned"])
        if not uris or not scanned:  # unreadable to the scan: a dead letter already
            return
        found = dict(grouped["rows"])
        try:
            statuses = article_rows.write_enriched(
                uris[0], storage.join(self.directory, name), found, self.guard
            )
        except article_rows.BadArticlesFile as err:
            # Its rows were counted in by the PMID scan: they leave as dead letters.
            yield dead(FILES, name, "articles_file_invalid", str(err), uris[0])
            yield f"{STAGE}.dead_letter", scanned[0]
            return
        written = sum(statuses.values())
        progress.tick("articles", written)
        yield f"{STAGE}.out", written
        yield f"{FILES}.out", 1
        for status, n in sorted(statuses.items()):
            yield f"{STAGE}.by_status.{status}", n


class EnrichArticles(beam.PTransform):
    """articles file URIs (sorted) in; the enriched files written to `directory`. Outputs:
    `counts` ((name, n) for the run report) and `dead_letter`.

    `medline` (MEDLINE file URIs) or `eutils` (EutilsClient settings): where records come
    from."""

    def __init__(
        self,
        directory: str,
        medline: list[str] | None = None,
        eutils: dict | None = None,
        s3: storage.S3Config = storage.S3Config(),
        guard=None,
    ):
        super().__init__()
        if (medline is None) == (eutils is None):
            raise ValueError("records come from MEDLINE files or from E-utilities: one of them")
        self.directory, self.medline, self.eutils = directory, medline, eutils
        self.s3, self.guard = s3, guard

    def expand(self, uris):
        p = uris.pipeline
        keyed_uris = uris | "ByName" >> beam.Map(lambda uri: (_name(uri), uri))
        scanned = (
            uris
            | "SpreadFiles" >> beam.Reshuffle()
            | "ArticlePmids" >> beam.ParDo(ArticlePmids()).with_outputs(DEAD, COUNTS, SCANNED)
        )
        refs = scanned[None]
        dead_letters = [scanned[DEAD]]
        counts = [
            scanned[COUNTS],
            uris | "FilesIn" >> beam.Map(lambda _: (f"{FILES}.in", 1)),
        ]
        if self.medline is not None:
            pmids = (
                refs
                | "PmidNumbers" >> beam.Map(lambda kv: int(kv[0]))
                | "DistinctPmids" >> beam.CombineGlobally(DistinctPmids())
            )
            parsed = (
                p
                | "MedlineFiles" >> beam.Create(self.medline)
                | "SpreadMedline" >> beam.Reshuffle()
                | "ParseMedline"
                >> beam.ParDo(
                    ParseMedlineFiles(self.s3), beam.pvalue.AsSingleton(pmids)
                ).with_outputs(DEAD, COUNTS, FAILED)
            )
            versions, failed = parsed[None], parsed[FAILED]
            counts += [
                parsed[COUNTS],
                p
                | "MedlineIn"
                >> beam.Create([(f"{MEDLINE}.in", len(self.medline))] if self.medline else []),
            ]
            dead_letters.append(parsed[DEAD])
        else:
            fetched = (
                refs
                | "Pmids" >> beam.Map(lambda kv: (None, kv[0]))
                | "OneProcess" >> beam.GroupByKey()
                | "FetchEutils"
                >> beam.ParDo(FetchFromEutils(self.eutils)).with_outputs(DEAD, COUNTS)
            )
            versions, failed = fetched[None], p | "NoFailedFiles" >> beam.Create([])
            counts.append(fetched[COUNTS])
            dead_letters.append(fetched[DEAD])
        rows = (
            {"articles": refs, "pubmed": versions}
            | "ByPmid" >> beam.CoGroupByKey()
            | "Resolve" >> beam.ParDo(ResolvePmid(), beam.pvalue.AsList(failed))
        )
        written = (
            {"uri": keyed_uris, "scanned": scanned[SCANNED], "rows": rows}
            | "ByFile" >> beam.CoGroupByKey()
            | "WriteArticles"
            >> beam.ParDo(WriteEnrichedFile(self.directory, self.guard)).with_outputs(DEAD)
        )
        counts.append(written[None])
        dead_letters.append(written[DEAD])
        return {
            COUNTS: counts | "AllCounts" >> beam.Flatten(),
            DEAD: dead_letters | "AllDead" >> beam.Flatten(),
        }
