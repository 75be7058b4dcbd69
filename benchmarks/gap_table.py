"""Where the gap to PyTorch is: per tuning task, TVM's best measured kernel against the
PyTorch eager (oneDNN) time of the same convolution, from the PyTorch profiler.

    .venv/bin/python benchmarks/gap_table.py --log tuning_logs/resnet18-avx2.jsonl.gz [--model resnet18] [--target avx2]

Blocked-layout tasks (NCHW[b]c) are matched to the eager conv of the same unblocked shapes.

TVM times are the log's best measurement per task (MetaSchedule's runner, kernel alone).
PyTorch times are the median wall time of the ``nn.Conv2d`` with the same input and weight shapes,
timed by forward hooks over eager runs. Conv FLOP = 2 x MAC; a fused TVM task also does the
batch-norm/ReLU/add epilogue, which the PyTorch column times as separate ops (not counted here).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from tunebench import api
from tunebench.logs import records
from tunebench.serve.choose import best_records


def task_conv_key(task: object) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(input NCHW, weight OIHW) of a fused conv task, read off its TIR signature (first two buffers:
    data and weight, NCHW/OIHW or blocked NCHW[b]c/OIHW[b]i[b]o, unblocked here)."""
    if not task.anchor.startswith("conv2d"):  # type: ignore[attr-defined]
        return None
    func = next(iter(task.mod.functions.values()))  # type: ignore[attr-defined]
    header = func.script().split("T.func_attr", 1)[0]
    # each parameter reads: name: T.Buffer((T.int64(1), T.int64(64), ...), "float32")
    shapes = [tuple(int(n) for n in re.findall(r"\d+", dims.replace("T.int64", ""))) for dims in re.findall(r"T\.Buffer\(\((.*?)\), \"", header)]
    if len(shapes) < 2:
        return None
    data, weight = shapes[0], shapes[1]
    if len(data) == 5:  # N, C/b, H, W, b
        data = (data[0], data[1] * data[4], data[2], data[3])
    if len(weight) == 6:  # O/bo, I/bi, KH, KW, bi, bo
        weight = (weight[0] * weight[5], weight[1] * weight[4], weight[2], weight[3])
    return (data, weight) if len(data) == len(weight) == 4 else None


def eager_conv_times(model: torch.nn.Module, x: torch.Tensor, runs: int) -> dict[tuple, list[float]]:
    """(input shape, weight shape) -> per-call milliseconds of each nn.Conv2d in eager, timed by hooks."""
    times: dict[tuple, list[float]] = defaultdict(list)
    started: dict[int, float] = {}

    def pre(mod: torch.nn.Module, inp: tuple) -> None:
        started[id(mod)] = time.perf_counter()

    def post(mod: torch.nn.Module, inp: tuple, out: torch.Tensor) -> None:
        times[(tuple(inp[0].shape), tuple(mod.weight.shape))].append((time.perf_counter() - started[id(mod)]) * 1e3)

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for _ in range(3):
            model(x)
        handles = [h for m in convs for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
        for _ in range(runs):
            model(x)
    for h in handles:
        h.remove()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--target", default="avx2")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    lowered = api.lower_model(args.model, args.target)
    log = records.read_log(args.log)
    best = best_records(log, lowered.target)
    torch.set_num_threads(lowered.target.num_cores)
    eager = eager_conv_times(lowered.model, lowered.example_inputs[0], args.runs)

    table = Table(title=f"{args.model} per-task gap, {args.log} ({len(log.records)} records) vs PyTorch eager, {torch.get_num_threads()} threads")
    for col in ("task", "x", "MFLOP", "trials", "TVM ms", "TVM GFLOP/s", "eager conv ms", "eager GFLOP/s", "TVM/eager time"):
        table.add_column(col, justify="left" if col == "task" else "right")
    trials = log.trials()
    tvm_total = eager_total = 0.0
    for t in lowered.tasks:
        rec = best.get(t.workload_key)
        tvm_ms = rec.latency * 1e3 if rec else math.nan
        conv = task_conv_key(t)
        match = [eager[conv]] if conv in eager else []
        eager_ms = statistics.median(match[0]) if match else math.nan
        tvm_total += t.weight * tvm_ms if rec else 0.0
        eager_total += t.weight * eager_ms if match else 0.0
        table.add_row(
            t.name[:44],
            str(t.weight),
            f"{t.flop / 1e6:.1f}",
            str(trials.get(t.workload_key, 0)),
            f"{tvm_ms:.3f}",
            f"{t.flop / tvm_ms / 1e6:.1f}" if rec else "-",
            f"{eager_ms:.3f}" if match else "-",
            f"{t.flop / eager_ms / 1e6:.1f}" if match else "-",
            f"{tvm_ms / eager_ms:.2f}" if rec and match else "-",
        )
    table.add_section()
    table.add_row("weighted total (matched rows)", "", "", str(len(log.records)), f"{tvm_total:.2f}", "", f"{eager_total:.2f}", "", "")
    Console().print(table)


if __name__ == "__main__":
    main()
