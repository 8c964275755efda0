# Two entry points (see README.md):
#   make demo   install lbdeploy into .venv and run the end-to-end demo on the bundled model
#   make test   install the development set into .venv, build the emulated ARM lane, run the tests
#   make test-fast  the development tier: no slow and no emulated-ARM tests, no lane or CUDA kit build
# Development and CI installs use constraints.txt (torch==2.13.0 CPU and the other pins);
# `pip install lbdeploy[...]` without it lets users bring their own torch.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-durations install install-dev arm-lane cuda-kit bench clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	$(PIP_INSTALL) -e ".[all]"

install-dev: $(PY)
	$(PIP_INSTALL) -e ".[dev]"

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh demo-out

# Exit code 3: qemu or the cross compiler cannot be installed here; the ARM tests then skip
# (unless LBDEPLOY_REQUIRE_ARM=1, as in CI, makes that a failure).
arm-lane:
	bash scripts/arm-lane.sh || [ $$? -eq 3 ]

# clang + CUDA 11.8 headers/ptxas: compile-checks the CUDA kernel for Jetson Xavier (sm_72), which
# CUDA 13's nvcc cannot target. Exit code 3: cannot be installed here; that test then skips.
cuda-kit:
	bash scripts/cuda-legacy-kit.sh >/dev/null || [ $$? -eq 3 ]

# The suite runs on every core (pytest-xdist); a test file stays on one worker, so a module's shared
# fixtures (exports, servers) are made once. Session fixtures are made once per worker: they write
# under tmp_path_factory, and the kernel cache is locked (lbdeploy/kernels/locking.py). Files go out
# longest first (tests/conftest.py, from tests/file_seconds.json).
XDIST := -n auto --dist loadfile --no-loadscope-reorder

# pytest's exit code 5 (no test collected) is a failure here too.
test: install-dev arm-lane cuda-kit
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests" >&2; exit $$rc; }

# The fast tier for development (docs/architecture.md, "Tests"): the same suite minus the
# @pytest.mark.slow and @pytest.mark.arm tests; run `make test` before merging.
test-fast: install-dev
	$(PY) -m pytest $(XDIST) -m "not slow and not arm" $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests" >&2; exit $$rc; }

# Re-measure the seconds per test file that order `make test` (after adding or slowing tests).
test-durations: install-dev arm-lane cuda-kit
	$(PY) -m pytest $(XDIST) -q --junitxml=.pytest-durations.xml $(PYTEST_ARGS)
	$(PY) scripts/file-seconds.py .pytest-durations.xml tests/file_seconds.json && rm .pytest-durations.xml

bench: install
	$(PY) bench/run.py

clean-demo:
	rm -rf demo-out
