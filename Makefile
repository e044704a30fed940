# Two commands do all set-up on a fresh machine (no GPU, no model weights needed):
#   make demo   builds stories/demo.yaml into output/demo/ (with --draft into output/demo/draft/ when
#               the models are missing: a build never turns into a draft on its own)
#   make test   runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 is pinned for set-up only (its CPU build is what this project's machines carry); the
# package itself accepts any torch >= 2.1, so GPU users keep their CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-oldest lint bench-tiny

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
	@if $(VENV)/bin/storyboard validate stories/demo.yaml >/dev/null 2>&1; then \
		$(VENV)/bin/storyboard build stories/demo.yaml; \
	else \
		echo "models not installed: drawing draft panels into output/demo/draft/ (see README 'Real models')"; \
		$(VENV)/bin/storyboard build stories/demo.yaml --draft; \
	fi

# Every core (at most 4 workers): the suite is mostly subprocesses and tiny models, one core each.
# A test module stays on one worker, its tests in order (--dist loadfile): the README test runs the
# README's commands one after the other on one copy of the repository.
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadfile

lint: setup
	$(VENV)/bin/ruff check storyboard tests bench tools
	$(VENV)/bin/mypy storyboard
	$(VENV)/bin/mypy --strict storyboard/story storyboard/render storyboard/app storyboard/jobs.py \
		storyboard/check storyboard/review storyboard/distributed storyboard/writes.py storyboard/cli.py \
		storyboard/input_images.py

# The oldest transformers/diffusers pyproject.toml accepts, overlaid on the dev environment: every
# checkpoint layout (SD1 with and without text_model., SDXL, v-pred + ztsnr) must load under them too.
OLDEST := "transformers==4.57.1" "diffusers==0.35.2" "tokenizers==0.22.2" "huggingface_hub==0.36.2"
test-oldest: setup
	$(PY) -m pip install -q --no-deps --target $(VENV)/oldest $(OLDEST)
	HF_HUB_OFFLINE=1 PYTHONPATH=$(VENV)/oldest $(PY) -m pytest -q tests/test_models_load.py \
		tests/test_sdxl_family.py storyboard/models/modules.py -k "not demo and not time_ids"
