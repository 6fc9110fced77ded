# The two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml scripts/setup.sh scripts/setup.d/*.sh 2>/dev/null | sha1sum | cut -c1-12)
SHARED ?= $(or $(TERRALOC_SHARED),../shared)
export TERRALOC_SHARED := $(abspath $(SHARED))

.PHONY: install demo test lint typecheck unit clean llm-models

install: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh $(wildcard scripts/setup.d/*.sh)
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	@rm -f $(VENV)/.installed-* && touch $@

demo: install
	bash scripts/demo.sh

lint: install
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

# Optional: the Qwen2.5-Coder-1.5B-Instruct GGUF (~1.1 GB) used by `terraloc rag eval --llm local`.
llm-models: install
	$(PY) -m terraloc rag models pull qwen2.5-1.5b

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
