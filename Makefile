# Two commands on a fresh machine with Python 3:  make report  and  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: report test lint bench notebooks screenshot clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make report: the main job on the bundled sample; writes the HTML and PDF report into reports/
report: $(STAMP)
	$(BIN)/funnelstats report --sample --out reports

## make notebooks: run every notebook top to bottom; executed copies land in reports/notebooks/
notebooks: $(STAMP)
	$(BIN)/python notebooks/run.py --out reports/notebooks

## make screenshot: docs/report-screenshot.png from the sample report (needs Debian chromium)
CHROMIUM ?= chromium
screenshot: report
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir="$$(mktemp -d)" --hide-scrollbars --force-device-scale-factor=1 \
	  --window-size=1280,1700 --screenshot="$(CURDIR)/docs/report-screenshot.png" \
	  "file://$(CURDIR)/reports/funnelstats-report-2024-12-31.html"

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
