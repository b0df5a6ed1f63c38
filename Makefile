# Two commands do everything on a fresh machine: `make test` and `make demo`.
# Set-up (venv, pinned torch, the package, test oracles, the Debian Fashion-MNIST package) runs
# once and is skipped while pyproject.toml and this Makefile are unchanged.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.splitattn-setup
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

# torch 2.14.1 + torchvision 0.29.1: the pair that imports together here (see DEVELOPERS.md)
TORCH   := torch==2.14.1 torchvision==0.29.1
# test oracles, installed without their dependencies: the official package imports with torch alone,
# and the foolbox wheel is only used for its 20 labelled ImageNet photos
ORACLES := resnest==0.0.5 foolbox==3.3.4

.PHONY: setup data test demo lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[test,dev]'
	$(PIP) install --quiet --no-deps $(ORACLES)
	touch $(STAMP)

data:
	@if [ -f $(FASHION_MNIST) ]; then \
		echo "Fashion-MNIST: $(dir $(FASHION_MNIST))"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST is not installed and this is not root: run 'sudo apt-get install dataset-fashion-mnist'"; \
	fi

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: setup data lint
	$(PY) -m pytest -q --durations=10

# The main job: train the CPU preset on Fashion-MNIST, evaluate on the 10k test set, write checkpoint,
# curves and predictions grid to runs/fashion_mnist_cpu/; the last line gives test top-1 and wall time.
# Each `make demo` trains afresh (--overwrite replaces the previous demo run in that folder).
demo: setup data
	$(VENV)/bin/splitattn train --config configs/fashion_mnist/resnest_cpu.yaml --overwrite \
		--summary-json runs/fashion_mnist_cpu/summary.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
