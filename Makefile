# Thin wrappers around the `harness` CLI. `make profile` and `make test` each do all set-up.
#
#   PYTHON=python3.12      interpreter that creates the venv
#   SYSTEM_SITE=1          let the venv see the system's site-packages (torch/CuPy already there)
#   PY=/path/to/python3    use that interpreter as it is: no venv, nothing installed (GPU boxes
#                          without internet); the source tree goes on PYTHONPATH. Without PY or a
#                          venv, $(PYTHON) is used this way where it holds every dependency, GPU ones too
#   TORCH_SPEC=...         what pip installs for torch (empty: no torch)
#   ARGS=...               extra arguments for `harness profile` / `harness compare`

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
ARGS ?=
PYTEST_ARGS ?=

# No venv yet and an interpreter that already holds every dependency, the GPU ones included (a GPU
# box's image, often without the internet a venv would install from): use it as it is, as PY= does
ifndef PY
ifeq ($(wildcard $(VENV)/.installed),)
ifeq ($(shell $(PYTHON) -c 'import numpy, numba, yaml, matplotlib, torch, cupy, pynvml, pytest' >/dev/null 2>&1 && echo ready),ready)
PY := $(shell command -v $(PYTHON))
$(info $(PY) holds every dependency (GPU ones too): used as it is, no venv (PY= chooses another))
endif
endif
endif

ifdef PY
RUN := PYTHONPATH=$(CURDIR) $(PY)
SETUP :=
else
RUN := $(VENV)/bin/python
SETUP := $(VENV)/.installed
endif

.PHONY: setup profile quick test lint bench report regress clean

setup: $(SETUP)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(if $(SYSTEM_SITE),--system-site-packages) $(VENV)
	$(if $(strip $(TORCH_SPEC)),$(VENV)/bin/pip install --quiet $(TORCH_SPEC))
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

profile: $(SETUP)
	$(RUN) -m harness profile $(ARGS)

quick: $(SETUP)
	$(RUN) -m harness profile --quick $(ARGS)

test: $(SETUP)
	$(RUN) -m pytest -q $(PYTEST_ARGS)

# undefined and unused names, syntax errors (pyproject's [tool.ruff.lint]); make test runs it too
lint: $(SETUP)
	$(RUN) -m ruff check .

# profile this machine quickly and compare with its committed profile: exit 1 on a regression
# (build/regress/ is per machine: a checkout shared between machines keeps each one's run apart)
regress: $(SETUP)
	id=$$($(RUN) -c 'from harness.machine import identify_cpu; print(identify_cpu()["id"])') && \
	$(RUN) -m harness profile --quick --out build/regress/$$id.yaml && \
	$(RUN) -m harness compare profiles/$$id.yaml build/regress/$$id.yaml --out build/regress/$$id.md $(ARGS)

report: $(SETUP)
	$(RUN) -m harness report $(ARGS)

bench: $(SETUP)
	$(RUN) benchmarks/cpu_balance.py $(ARGS)
	$(RUN) benchmarks/cpu_decode.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
