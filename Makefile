# `make demo` and `make test` each create or refresh .venv, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The LiteLLM proxy for tests/transport/test_litellm.py lives in a venv of its own: its pins of openai,
# pydantic and aiohttp must not move ours.
LITELLM_VENV := .venv-litellm
LITELLM_STAMP := $(LITELLM_VENV)/.installed

.PHONY: demo test lint bench clean venv litellm-venv

venv: $(STAMP)
litellm-venv: $(LITELLM_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(LITELLM_STAMP): tests/litellm/requirements.txt tests/litellm/constraints.txt
	@test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LITELLM_VENV)/bin/python -m pip install --quiet -r tests/litellm/requirements.txt \
		-c tests/litellm/constraints.txt
	@touch $(LITELLM_STAMP)

# The demo runs against the loopback simulator: with the provider keys and endpoints unset the
# notebook starts its own simulator, so nothing reaches the internet.
OFFLINE := env -u OPENAI_API_KEY -u OPENAI_BASE_URL -u ANTHROPIC_API_KEY -u ANTHROPIC_BASE_URL \
	-u DEEPSEEK_API_KEY -u GEMINI_API_KEY

demo: $(STAMP)
	$(OFFLINE) $(BIN)/python -m llmbatch_pd
	$(OFFLINE) $(BIN)/python tools/run_notebook.py notebooks/quickstart.ipynb --html build/quickstart.html

test: $(STAMP) $(LITELLM_STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/rate_limit.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/embeddings.py

clean:
	rm -rf $(VENV) $(LITELLM_VENV) build .pytest_cache
