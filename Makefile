# Two commands for a fresh machine: `make demo` and `make test`.
# TORCH pins PyTorch (a CUDA build that also runs on the CPU); e.g. `make demo TORCH="torch==2.13.0"`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint docs bench-quick bench-metrics bench-lgg clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/medseg demo

# the unit tests (2 processes, pytest-xdist), then every benchmarks/ script with --quick
# (tests/test_benchmarks_quick.py). Real data: $$MEDSEG_SHARED_DATA, else ../shared/data; skipped when absent.
test: install
	$(PY) -m pytest -q -n 2
	$(PY) -m pytest -q -n 2 -m benchmarks tests/test_benchmarks_quick.py

lint: install
	$(PY) -m ruff check src tests benchmarks

# the documentation site into site/ (a broken link, a missing page or results file fails it)
docs: install
	$(PY) -m mkdocs build --strict

# every benchmarks/ script with --quick (tests/test_benchmarks_quick.py): they still run
bench-quick: install
	$(PY) -m pytest -q -n 2 -m benchmarks tests/test_benchmarks_quick.py

bench-metrics: install
	$(PY) benchmarks/metrics_speed.py

bench-lgg: install
	$(PY) benchmarks/lgg_unet.py

clean:
	rm -rf runs site .pytest_cache
