# Quickstart: `make demo` and `make test`; both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) train.py --config=configs/demo.py --workdir=$(WORKDIR) --inspect_data

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) bench/input_pipeline.py

clean:
	rm -rf $(VENV) *.egg-info workdirs
