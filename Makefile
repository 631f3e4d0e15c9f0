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
# extracted, then sharded into a dataset.
demo: $(VENV)/.installed
	rm -rf data/sample
	$(PY) -m pipelines.sample --output data/sample --articles $(SAMPLE_ARTICLES)
	$(PY) -m pipelines.extract --source data/sample --output out/demo --overwrite
	$(PY) -m pipelines.shard --input out/demo --output out/demo-dataset --overwrite --samples_per_shard 100

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

BENCH_ARTICLES ?= 1000 5000 20000

# Both benchmarks: extract on generated corpora, then shard on the extract outputs.
bench: $(VENV)/.installed
	$(PY) bench/extract_throughput.py --articles $(BENCH_ARTICLES)
	$(PY) bench/shard_throughput.py --input $(foreach n,$(BENCH_ARTICLES),bench/results/out-$(n))

clean:
	rm -rf out data
