# anogan: the two commands a new user needs are `make train-healthy` and `make test`.
# Both create .venv on first use: torch==2.13.0 first (the local CPU build), then the rest.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.anogan-installed
CONFIG ?= configs/demo.yaml
DATA ?=
QUALITY_DATA ?= ../shared/data/brain-tumor-mri-128
SET ?=

.PHONY: help install train-healthy test lint format bench bench-quality clean

help:
	@echo "make train-healthy [DATA=path] [CONFIG=configs/brain-mri.yaml]  train, calibrate, evaluate"
	@echo "make test        lint and the fast test suite"
	@echo "make bench       throughput figures (printed, not asserted)"
	@echo "make bench-quality [QUALITY_DATA=path]  detection quality on real brain MRI (about 75 min)"

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

train-healthy: $(STAMP)
	$(PY) -m pipelines.train_healthy --config $(CONFIG) $(if $(DATA),--data "$(DATA)") $(SET)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m pipelines.benchmark throughput

bench-quality: $(STAMP)
	$(PY) -m pipelines.benchmark quality --data "$(QUALITY_DATA)" --config configs/brain-mri.yaml $(SET)

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
