# Two commands work on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench accuracy anomaly-eval anomaly-bench report-bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/recon demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/bench_day.py
	$(BIN)/python bench/formats.py
	$(BIN)/python bench/clicks.py
	$(BIN)/python bench/anomaly_bench.py

accuracy: $(STAMP)
	$(BIN)/python bench/accuracy.py

anomaly-eval: $(STAMP)
	$(BIN)/python bench/anomaly_eval.py

anomaly-bench: $(STAMP)
	$(BIN)/python bench/anomaly_bench.py

report-bench: $(STAMP)
	$(BIN)/python bench/report_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache reconbot.db reconbot.db-snapshots demo-output
