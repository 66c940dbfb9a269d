# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv when missing and installs llava-star into it (CPU machine: torch is
# the 2.14.1 build that pip finds on local disk; on a GPU machine use the same pins).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= test,train,eval
DEMO_DIR ?= demo_run
PYTEST_ARGS ?=

.PHONY: demo test test-fast install compile clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]' $(TORCH_PINS)
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/llava-star demo -o $(DEMO_DIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Optional: the verifier as C extensions (mypyc, about 1.2x faster), built next to its sources.
# Python loads them instead of the .py files: run it again after editing llava_star/verify.
compile: $(VENV)/.installed
	LLAVA_STAR_COMPILE=1 $(PY) setup.py build_ext --inplace

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *__mypyc*.so llava_star/verify/*.so
