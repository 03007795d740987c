# osvirt: `make demo` and `make test` are the two commands a new user needs;
# each creates .venv and builds the C extension on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Rebuilt only when what the install or the extension depends on changes.
# The plot extra comes too: `osvirt bench --plot` works, and its test runs.
STAMP   = $(VENV)/.osvirt-installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help demo test info clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

$(STAMP): Makefile pyproject.toml osvirt/_build_native.py $(wildcard csrc/*.c csrc/*.h csrc/cpython/*.c csrc/cpython/*.h csrc/inline/*.h)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,plot]'
	touch $@

demo: $(STAMP)  ## run every demo: what the kernel did next to what theory predicts
	$(BIN)/osvirt demo all $(ARGS)

test: $(STAMP)  ## run the whole test suite (pytest arguments: make test ARGS='-k sched -x')
	$(BIN)/python -m pytest $(ARGS)

info: $(STAMP)  ## what this environment allows, and why
	$(BIN)/osvirt info

clean:  ## remove .venv and build products
	rm -rf $(VENV) build *.egg-info osvirt/_native*.so osvirt/_native.c
