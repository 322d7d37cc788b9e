# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv on first use; it is rebuilt only when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
STAMP := $(VENV)/.refine-dp-installed
# Extra pip arguments for the torch install, e.g. an --index-url serving CPU-only wheels.
TORCH_PIP_ARGS ?=

# Headless rendering: EGL (Mesa's llvmpipe without a GPU); use MUJOCO_GL=osmesa as a fallback.
MUJOCO_GL ?= egl
export MUJOCO_GL

.PHONY: venv app-venv test demo bench app

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	# torch first, so that the build chosen by TORCH_PIP_ARGS is the one the project install keeps.
	$(VENV)/bin/python -m pip install -q $(TORCH_PIP_ARGS) torch==2.13.0
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

# The desktop app: the app extra (PyQt6, vedo) on top of the project.
APP_STAMP := $(VENV)/.refine-dp-app-installed

app-venv: $(APP_STAMP)

$(APP_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install -q -e '.[app]'
	touch $@

app: app-venv
	$(VENV)/bin/refine-dp app

test: venv
	$(VENV)/bin/python -m pytest -q

demo: venv
	$(VENV)/bin/refine-dp demo --out out/demo

bench: venv
	$(VENV)/bin/refine-dp bench sim --task box_pickup --worlds 64
