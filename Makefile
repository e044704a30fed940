# Two commands do all set-up on a fresh machine (no GPU, no model weights needed):
#   make demo   builds stories/demo.yaml into output/demo/ (draft panels when models are missing)
#   make test   runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 is pinned for set-up only (its CPU build is what this project's machines carry); the
# package itself accepts any torch >= 2.1, so GPU users keep their CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint bench-tiny

# The ray extra is installed for tests: tests/test_ray_*.py run a local Ray instance on the CPU.
# k-diffusion is the reference the sampler tests compare against; its own requirements pull in
# torchvision (and with it another torch), and the tests need only its sampling code: --no-deps.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,ray]"
	$(PY) -m pip install -q --no-deps "k-diffusion==0.1.1.post1"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/storyboard build stories/demo.yaml

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check storyboard tests bench
	$(VENV)/bin/mypy storyboard
