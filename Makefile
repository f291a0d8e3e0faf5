# Tessera developer entry points (see README.md).
#
#   make dev     .venv/ with the project installed editable + dev tools, gRPC stubs generated
#   make lint    make dev, then ruff and mypy as pyproject.toml configures them
#   make test    make dev, make lint, then the whole pytest suite   (extra flags: PYTEST_ARGS='-k foo -x')
#   make test-fast  make dev, then the unit tier only (tests/unit, seconds)
#   make run     make dev, then `tessera cluster up`     (extra flags: RUN_ARGS='--nodes 5')
#   make protos  regenerate tesserapb/ from protos/ even if it looks up to date
#   make clean   remove .venv/, tesserapb/ and build litter (never data/)
#
# Every step is a real file target or a stamp file, so a second `make dev` does nothing.

SHELL        := /bin/bash
PYTHON       ?= python3
VENV         := .venv
VPY          := $(VENV)/bin/python
PIP          := $(VPY) -m pip --disable-pip-version-check
PROTOS       := $(sort $(wildcard protos/tesserapb/*.proto))
STUBS_STAMP  := tesserapb/.generated
PYTEST_ARGS  ?=
RUN_ARGS     ?=

.DEFAULT_GOAL := dev
.PHONY: dev lint test test-fast run protos clean

dev: $(VENV)/.installed $(STUBS_STAMP)

# The virtual environment itself. A half-made .venv (e.g. ensurepip missing) is removed so the
# next run starts over instead of trusting it.
$(VENV)/.created:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: Tessera needs Python >= 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." >&2; \
	  echo "       Run with PYTHON=/path/to/python3.11 make dev" >&2; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "error: '$(PYTHON)' has no working venv module (ensurepip is missing)." >&2; \
	  echo "       On Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }
	$(PIP) install --quiet --progress-bar off --upgrade pip || { rm -rf $(VENV); exit 1; }
	touch $@

# The project, editable, with the dev extra. editable_mode=compat installs a plain .pth that
# puts the repo root on sys.path, so node/, router/, tools/ and the generated tesserapb/ all
# import from the work tree (tesserapb/ does not exist yet when this runs). setuptools calls
# compat mode transitional: should a future release drop or change it, the check below falls
# back to a .pth of our own rather than leave the repo off sys.path.
$(VENV)/.installed: pyproject.toml $(VENV)/.created
	$(PIP) install --quiet --progress-bar off -e '.[dev]' --config-settings editable_mode=compat
	@cd / && '$(CURDIR)/$(VPY)' -c 'import tools.cli' 2>/dev/null || { \
	  echo "note: editable install left $(CURDIR) off sys.path; adding tessera-root.pth" >&2; \
	  echo '$(CURDIR)' > "$$('$(CURDIR)/$(VPY)' -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tessera-root.pth"; }
	touch $@

# gRPC stubs. Regenerated from scratch whenever a .proto changes or the toolchain is
# reinstalled; the output depends only on the grpcio-tools version.
$(STUBS_STAMP): $(PROTOS) $(VENV)/.installed
	rm -rf tesserapb
	mkdir -p tesserapb
	$(VPY) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. $(PROTOS)
	printf '"""Generated from protos/tesserapb/*.proto by `make protos`. Do not edit."""\n' > tesserapb/__init__.py
	touch $@

protos: $(VENV)/.installed
	rm -f $(STUBS_STAMP)
	$(MAKE) --no-print-directory $(STUBS_STAMP)

lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(VPY) -m pytest $(PYTEST_ARGS)

test-fast: dev
	$(VPY) -m pytest tests/unit $(PYTEST_ARGS)

run: dev
	$(VENV)/bin/tessera cluster up $(RUN_ARGS)

clean:
	rm -rf $(VENV) tesserapb build .pytest_cache .mypy_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +
