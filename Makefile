# Two commands on a fresh machine:  `make demo`  and  `make test`.
# torch is installed first and pinned: on these machines 2.13.0 is a CPU wheel on disk,
# while any unpinned torch would pull gigabytes of CUDA packages.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  ?= torch==2.13.0
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install demo figures test test-slow bench lint format docs

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,lint,docs,bert,figures,notebook]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mi-cluster demo

# Every figure under figures/: the demo and each experiment (offline).
figures: $(STAMP)
	$(VENV)/bin/mi-cluster figures

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m slow -q

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_collect.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_similarity.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_stats.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_patching.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_patching.py --arch pythia-160m
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_patching.py --arch qwen2.5-0.5b --sweeps head_out,resid_pre
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_lens.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_store.py

# ruff; the layers (a module imports only its own layer and those below; no cycles); types
# The documentation site, offline, warnings as errors (into site/)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/basedpyright

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .
