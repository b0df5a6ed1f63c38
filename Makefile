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

.PHONY: setup oracles data test demo lint clean

setup: $(STAMP)

# detectron2 (upstream snapshot in ../shared/oracles, built CPU-only from a writable copy, 5-10 min on
# 2 cores) for the detection parity tests; the official d2 plug-in is imported from ../shared/oracles/ResNeSt.
# Built once: its stamp only needs the venv to exist, so a Makefile edit does not rebuild it.
ORACLE_SRC := ../shared/oracles
D2_BUILD   := .oracles/detectron2
D2_STAMP   := $(VENV)/.detectron2-oracle
# mmdetection 3.3 for the mmdet-layout parity tests: mmcv-lite (mmdet asserts mmcv < 2.2; the full mmcv
# compiles for ~45 min), its compiled ops replaced in the tests by torchvision's (tests/oracles/mmdet_models.py)
MM_ORACLES := mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0
MM_STAMP   := $(VENV)/.mmdet-oracle
# segmentation oracles: mmsegmentation 1.2.2 (same mmcv-lite stand-in; ftfy / regex are imports of mmseg), and
# PyTorch-Encoding 1.2.1 (an sdist whose setup.py wants RELEASE=1; --no-deps keeps pip from touching torch; its
# imports need requests and portalocker), cityscapesscripts for its label table
SEG_ORACLES := mmsegmentation==1.2.2 ftfy regex requests portalocker
SEG_NODEPS  := torch-encoding==1.2.1 cityscapesscripts==2.3.0
SEG_STAMP   := $(VENV)/.segmentation-oracles
oracles: $(D2_STAMP) $(MM_STAMP) $(SEG_STAMP)

$(SEG_STAMP): | $(MM_STAMP)
	$(PIP) install --quiet $(SEG_ORACLES)
	RELEASE=1 $(PIP) install --quiet --no-deps $(SEG_NODEPS)
	touch $@

$(MM_STAMP): | $(STAMP)
	$(PIP) install --quiet $(MM_ORACLES)
	touch $@

$(D2_STAMP): | $(STAMP)
	@test -d $(ORACLE_SRC)/detectron2 || { echo "missing $(ORACLE_SRC)/detectron2: the oracle sources must sit beside the project"; exit 1; }
	rm -rf $(D2_BUILD) && mkdir -p $(dir $(D2_BUILD)) && cp -r $(ORACLE_SRC)/detectron2 $(D2_BUILD)
	$(PIP) install --quiet ninja wheel 'setuptools<81'
	MAX_JOBS=2 $(PIP) install --quiet --no-build-isolation $(D2_BUILD)
	$(PY) -c "import detectron2._C"
	touch $@

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

test: setup oracles data lint
	$(PY) -m pytest -q --durations=10

# The main job: train the CPU preset on Fashion-MNIST, evaluate on the 10k test set, write checkpoint,
# curves and predictions grid to runs/fashion_mnist_cpu/; the last line gives test top-1 and wall time.
# Each `make demo` trains afresh (--overwrite replaces the previous demo run in that folder).
demo: setup data
	$(VENV)/bin/splitattn train --config configs/fashion_mnist/resnest_cpu.yaml --overwrite \
		--summary-json runs/fashion_mnist_cpu/summary.json

clean:
	rm -rf $(VENV) .oracles .pytest_cache .ruff_cache src/*.egg-info
