# Two commands on a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLE_ARTICLES ?= 50

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# constraints.txt pins the CPU torch so no dependency can pull a CUDA build.
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# The main job on the embedded default: a generated sample corpus in the PMC Cloud layout,
# extracted, enriched with the corpus's own PubMed records (MeSH terms, publication types),
# embedded (pixels: no weights), clustered and labelled, then sharded into a dataset that
# carries the labels and indexed for search, all through `biomedica run` (each stage's output
# under out/demo; the stages after enrich read its output as an extract output, its figures
# linked, not copied).
demo: $(VENV)/.installed
	rm -rf data/sample
	$(PY) -m pipelines.sample --output data/sample --articles $(SAMPLE_ARTICLES)
	$(PY) -m pipelines.run --source data/sample --output out/demo --overwrite \
	  --medline 'data/sample/pubmed/*.xml.gz' --clusters 16 --samples_per_shard 100
	@echo
	@echo "stages:   out/demo/{extract,enrich,embed,annotate,dataset,index} (each re-runs alone)"
	@echo "articles: out/demo/enrich/extract/articles (with MeSH terms from data/sample/pubmed)"
	@echo "dataset:  out/demo/dataset/webdataset (shards), out/demo/dataset/parquet (index)"
	@echo "card:     out/demo/dataset/README.md"
	@echo "gallery:  out/demo/annotate/gallery/index.html (open it in a browser to label clusters)"
	@echo "index:    out/demo/index (faiss + keyword index); \`make serve\` searches and streams it"

# Search and stream the demo dataset: http://127.0.0.1:8080/ (the page), /docs (the API).
.PHONY: serve
serve: $(VENV)/.installed
	$(PY) -m pipelines.serve --dataset out/demo/dataset --index out/demo/index --port 8080

# `biomedica run` on the sample corpus on the in-process, portable (LOOPBACK) and Dask
# runners: the same dataset, or a failure naming the difference (.ci/run calls it).
.PHONY: compare-runners
compare-runners: $(VENV)/.installed
	$(PY) .ci/compare_runners.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint browser
	$(PY) -m pytest -q -rs

# The gallery's browser test drives Debian's chromium through chromium-driver. Installed when
# missing and this user may (root, or sudo without a password); otherwise that test skips and
# says why.
.PHONY: browser
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "no apt-get: the gallery's browser test will skip (needs chromium, chromium-driver)"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq chromium chromium-driver \
	  || echo "could not install chromium: the gallery's browser test will skip"; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo -n apt-get update -qq && sudo -n apt-get install -y -qq chromium chromium-driver \
	  || echo "could not install chromium: the gallery's browser test will skip"; \
	else echo "chromium missing and not installable here: the gallery's browser test will skip"; \
	fi

BENCH_ARTICLES ?= 1000 5000 20000

# Both benchmarks: extract on generated corpora, then shard on the extract outputs.
bench: $(VENV)/.installed
	$(PY) bench/extract_throughput.py --articles $(BENCH_ARTICLES)
	$(PY) bench/shard_throughput.py --input $(foreach n,$(BENCH_ARTICLES),bench/results/out-$(n))

clean:
	rm -rf out data
