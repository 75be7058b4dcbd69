# Two commands for a fresh machine: `make tune` (the main job) and `make test`.
VENV_OK := .venv/.installed
MINUTES ?= 10
TRIALS  ?= 1000
BENCH_SECONDS ?= 90
TARGET  ?= host
MODEL   ?= resnet18
TUNE_ARGS ?=

.PHONY: setup tune test lint bench results clean

$(VENV_OK): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install --upgrade pip -q
	# torch first and pinned: its CPU wheel is on disk here; an unpinned resolve pulls CUDA.
	.venv/bin/pip install -q torch==2.13.0
	.venv/bin/pip install -q -e '.[dev,peers]'
	touch $(VENV_OK)

setup: $(VENV_OK)

# Tune ResNet18, then compare it against PyTorch and the peers, in MINUTES of wall clock on any host (whole
# minutes; setup aside): the tuning (lowering included) resumes the shipped log and stops BENCH_SECONDS before
# the end, what the bench after it takes (93 s on a 2-vCPU Zen 3; docs/tuning.md: what a run does in that time).
# TRIALS only caps it.
# TARGET=host tunes the widest ISA this CPU runs (AVX-512 where it has it, else AVX2) and says which; the bench
# then serves that log beside eager, inductor, ONNX Runtime and OpenVINO (docs/peers.md). Convs are tuned in the
# blocked layout; TUNE_ARGS='--layout nchw --winograd' tunes NCHW with Winograd tasks instead, '--fold-bn' with the batch
# norms folded into the convs (serving races the lowerings the log covers and serves the fastest).
tune: $(VENV_OK)
	.venv/bin/tunebench tune $(MODEL) --target $(TARGET) --timeout $$(( $(MINUTES) * 60 - $(BENCH_SECONDS) )) --more $(TRIALS) $(TUNE_ARGS)
	preset=$$(.venv/bin/python -c 'import sys; from tunebench.target import host_preset; print(host_preset()[0] if sys.argv[1] == "host" else sys.argv[1])' $(TARGET)); \
	.venv/bin/tunebench bench $(MODEL) --log tuning_logs/$(MODEL)-$$preset.jsonl.gz --target $(TARGET) --settle 1 --peers

test: $(VENV_OK)
	.venv/bin/ruff check tunebench models tests benchmarks
	.venv/bin/python -m pytest -x -q -n auto --dist loadfile --durations=15

# Rerun the ResNet18 benches and the tuning throughput, then write docs/results.md from benchmarks/results/.
bench: $(VENV_OK)
	.venv/bin/python benchmarks/run_all.py

# Rewrite docs/results.md from the files already in benchmarks/results/ (no benchmark runs; standard library only).
results:
	python3 benchmarks/results_page.py

clean:
	rm -rf .venv .pytest_cache
