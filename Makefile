# Aisle — the two commands of the README:
#   make demo   set everything up, export, index MovieLens-100K, serve, print recommendations
#   make test   set everything up, run the whole test suite (integration tests start a real tritonserver)

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test unit integration setup system-deps clean

demo: $(STAMP)
	$(VENV)/bin/aisle demo --workdir build

test: $(STAMP)
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

setup: $(STAMP)

# The Python backend's stub embeds Debian's libpython3.11; install it where it is missing.
system-deps:
	@ldconfig -p | grep -q 'libpython3.11.so.1.0' || { \
	  echo "installing Debian's libpython3.11 for Triton's Python backend"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11; }

# torch==2.13.0 first: the CPU build on local disk. Installed alone, so no resolver ever
# considers a newer (CUDA, multi-GB) torch for the packages that depend on it.
$(STAMP): pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[server,export,dev]"
	touch $(STAMP)

clean:
	rm -rf build .pytest_cache
