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
	$(PY) train.py --config=configs/demo.py --workdir=$(WORKDIR)
	$(PY) evaluate.py --config=configs/demo.py --workdir=$(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile tests

bench: $(VENV)/.installed
	$(PY) bench/input_pipeline.py
	$(PY) bench/metrics.py
	$(PY) bench/train_step.py --width 32 --size 128 --batch 4

clean:
	rm -rf $(VENV) *.egg-info workdirs
