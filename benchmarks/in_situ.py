"""Each served kernel timed inside the model and alone, the tuner's way: what serving adds to the log's timings.

    .venv/bin/python benchmarks/in_situ.py resnet18 --log tuning_logs/resnet18-avx512.jsonl.gz [--runs 20]

The model is saved with the log's records (in a child process) and loaded as a deployment does, its whole forward timed
uninstrumented, then each kernel in it (``benchmarks/per_layer.py``'s ``tvm_kernels``: the VM
instrument around every call of ``--runs`` forwards, which adds a few microseconds a call); then each
kernel alone, in this one process, after a flush of every argument but the input (the tuner's cold
protocol, what the log's records hold) and repeated (warm). A kernel slower in the model than alone cold loses
time the search cannot see: to memory traffic the flush does not reproduce, to the thread pool's
wake-up, or to the instrument. Prints per kernel and the sums; writes
``benchmarks/results/in-situ-<model>-<llvm cpu>.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import per_layer  # this folder's: the served model's kernels timed in it (VM instrument)

OUT = Path(__file__).resolve().parent / "results"
REPEAT = 30


def alone(lib: Any, name: str, shapes: list[tuple[tuple[int, ...], str]]) -> tuple[float, float]:
    """(cold, warm) median seconds of kernel ``name`` on random arguments of ``shapes``."""
    import numpy as np
    import tvm

    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.random.uniform(-1, 1, s).astype(d), dev) for s, d in shapes]
    cold = lib.time_evaluator(name, dev, number=1, repeat=REPEAT, f_preproc="cache_flush_cpu_non_first_arg")
    warm = lib.time_evaluator(name, dev, number=1, repeat=REPEAT)
    return statistics.median(cold(*args).results), statistics.median(warm(*args).results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--log", required=True)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    from tunebench.target import host_fingerprint, physical_cores

    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
    import torch

    from tunebench.zoo import get_model

    _, inputs = get_model(args.model)
    folder = Path(tempfile.mkdtemp(prefix="in-situ-")) / "saved"
    coverage = per_layer.saved(args.model, args.log, folder, int(os.environ["TVM_NUM_THREADS"]))  # in a child: its compile and race slow what follows
    with torch.no_grad():
        kernels, forward = per_layer.tvm_kernels(folder, inputs, args.runs)
    host, date = host_fingerprint(), datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    command = f"python benchmarks/in_situ.py {shlex.join(sys.argv[1:])}"
    lines = [
        f"# {args.model}: served kernels in the model vs alone (cold: the tuner's protocol; warm)",
        f"Host: {host['cpu']} (LLVM `{host['llvm_cpu']}`), {os.environ['TVM_NUM_THREADS']} threads. Date: {date}. Command: `{command}`.",
        f"Served: {coverage}.",
        "",
    ]
    lines += compared(folder, [k for k in kernels if k.kind != "vm"])
    lines.append(f"whole forward, uninstrumented: {statistics.median(forward) * 1e3:.3f} ms (kernels and the VM's builtins, no instrument)")
    print(lines[-1])
    (OUT / f"in-situ-{args.model}-{host['llvm_cpu']}.txt").write_text("\n".join(lines) + "\n")


def compared(folder: Path, kernels: list[per_layer.Kernel]) -> list[str]:
    """One line per kernel call: in the model, alone cold and warm; then the sums."""
    import tvm

    lib = tvm.runtime.load_module(str(folder / "model.so")).imports[0]  # the kernels' library under the VM executable
    lines, sums = [], [0.0, 0.0, 0.0]
    for k in kernels:
        name, t = k.name, k.ms / 1e3
        cold, warm = alone(lib, name, k.args)
        sums = [sums[0] + t, sums[1] + cold, sums[2] + warm]
        lines.append(f"{name[:64]:64s} in model {t * 1e3:.3f}  alone cold {cold * 1e3:.3f}  warm {warm * 1e3:.3f} ms  model/cold {t / cold:.2f}")
        print(lines[-1], flush=True)
    model, cold, warm = (x * 1e3 for x in sums)
    lines.append(f"sum of kernels: in model {model:.3f}, alone cold {cold:.3f}, warm {warm:.3f} ms (model/cold {model / cold:.3f})")
    print(lines[-1])
    return lines


if __name__ == "__main__":
    main()
