# Two commands on a fresh machine with Python 3:  make report  and  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: report test lint bench notebooks clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make report: the main job on the bundled sample; writes into reports/
report: $(STAMP)
	$(BIN)/funnelstats report --sample --out reports

## make test: lint and the whole test suite (doctests included)
test: $(STAMP)
	$(BIN)/ruff check funnelstats tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check funnelstats tests benchmarks

## make bench: the full benchmark (100k and 1M deals); see benchmarks/README.md
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info
