# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv when missing and installs llava-star into it with the lock of the
# tested environment (requirements/lock.txt, a pip constraints file): every package at the
# version the test suite passed with. `make lock` regenerates the lock from setup.cfg.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The resolver is part of the lock: the same pip makes it and installs from it.
PIP_VERSION ?= 26.3
LOCK ?= requirements/lock.txt
EXTRAS ?= test,train,eval,text
DEMO_DIR ?= demo_run
PYTEST_ARGS ?=

.PHONY: demo test test-fast gpu-check install lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml $(LOCK) | $(PY)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

# Resolve setup.cfg anew (pip's own resolver, nothing installed) and write the lock; then
# `make install` and the test suite (tests/test_lock.py) check the environment against it.
lock: | $(PY)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(PY) scripts/lock.py --extras $(EXTRAS) -o $(LOCK)

demo: $(VENV)/.installed
	$(VENV)/bin/llava-star demo -o $(DEMO_DIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# One CUDA GPU, a few minutes: real-geometry tiny models in bf16 (sdpa, flash-attn when
# installed), batched generate, 5 ZeRO-2 steps, save, reload, generate; a pass/fail table.
gpu-check: $(VENV)/.installed
	$(PY) scripts/gpu_check.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build
