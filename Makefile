# tierzero: `make run` starts the bot on the embedded defaults; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The marker is rebuilt whenever the declared dependencies change. constraints.txt
# pins the CPU build of torch: a bare `torch` pulls a multi-GB CUDA build.
INSTALLED := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test lint chat index bench clean

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

run: $(INSTALLED)
	$(BIN)/tierzero run

chat: $(INSTALLED)
	$(BIN)/tierzero chat

index: $(INSTALLED)
	$(BIN)/tierzero kb index

test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.retrieval --stackfaq ../shared/eval/retrieval/stackfaq --json

clean:
	rm -rf $(VENV) data build *.egg-info
