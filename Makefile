# Two commands for a fresh machine: `make tune` (the main job) and `make test`.
VENV_OK := .venv/.installed
TRIALS  ?= 300
TARGET  ?= avx2
MODEL   ?= resnet18
TUNE_ARGS ?=

.PHONY: setup tune test lint bench results clean

$(VENV_OK): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install --upgrade pip -q
	# torch first and pinned: its CPU wheel is on disk here; an unpinned resolve pulls CUDA.
	.venv/bin/pip install -q torch==2.13.0
	.venv/bin/pip install -q -e '.[dev]'
	touch $(VENV_OK)

setup: $(VENV_OK)

# Resume the shipped ResNet18 search with a bounded budget, then compare against PyTorch.
# On an AVX-512 host: make tune TARGET=avx512 (the faster shipped log here). Convs are tuned in the blocked
# layout; TUNE_ARGS='--layout nchw --winograd' tunes NCHW with Winograd tasks instead.
tune: $(VENV_OK)
	.venv/bin/tunebench tune $(MODEL) --target $(TARGET) --more $(TRIALS) $(TUNE_ARGS)
	.venv/bin/tunebench bench $(MODEL) --log tuning_logs/$(MODEL)-$(TARGET).jsonl.gz --target $(TARGET) --settle 1

test: $(VENV_OK)
	.venv/bin/ruff check tunebench models tests benchmarks
	.venv/bin/python -m pytest -x -q

# Rerun the ResNet18 benches and the tuning throughput, then write docs/results.md from benchmarks/results/.
bench: $(VENV_OK)
	.venv/bin/python benchmarks/run_all.py

# Rewrite docs/results.md from the files already in benchmarks/results/ (no benchmark runs; standard library only).
results:
	python3 benchmarks/results_page.py

clean:
	rm -rf .venv .pytest_cache
