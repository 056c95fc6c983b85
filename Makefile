# Quickstart: `make demo` and `make test`; both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test bench clean

# Bytecode is compiled on all cores after pip, not file by file inside it
# (~12 s less); as with pip, a file that does not compile fails on import.
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e '.[test]'
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

demo: $(VENV)/.installed
	$(PY) train.py --config=configs/demo.py --workdir=$(WORKDIR)
	$(PY) evaluate.py --config=configs/demo.py --workdir=$(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile tests

bench: $(VENV)/.installed
	$(PY) bench/input_pipeline.py
	$(PY) bench/metrics.py
	$(PY) bench/accelerator.py --width 32 --size 128 --dtype float32 --batches 4 --peak_size 2048 --torch

clean:
	rm -rf $(VENV) *.egg-info workdirs
