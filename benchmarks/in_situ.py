"""Each served kernel timed inside the model and alone, the tuner's way: what serving adds to the log's timings.

    .venv/bin/python benchmarks/in_situ.py resnet18 --log tuning_logs/resnet18-avx512.jsonl.gz [--runs 20]

The model is saved with the log's records (``tunebench.save``) and loaded as a deployment does; its
whole forward is timed uninstrumented first. Each kernel is then timed three ways in this one
process: in the model (``VirtualMachine.set_instrument`` around every call of ``--runs`` forwards;
the instrument itself adds a few microseconds a call), alone after a flush of every argument but the input (the tuner's cold protocol, what the log's
records hold), and alone repeated (warm). A kernel slower in the model than alone cold loses
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
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results"
REPEAT = 30


def whole(deployed: Any, inputs: tuple[Any, ...], runs: int) -> float:
    """Median seconds of the whole forward, uninstrumented (what a deployment sees)."""
    for _ in range(3):
        deployed(*inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        deployed(*inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def in_model(deployed: Any, inputs: tuple[Any, ...], runs: int) -> list[tuple[str, list[tuple[tuple[int, ...], str]], float]]:
    """(kernel name, argument shapes and dtypes, median seconds) per call position of the forward."""
    calls: list[tuple[str, list[tuple[tuple[int, ...], str]], float]] = []
    t0 = [0.0]

    def instrument(func: Any, name: str, before: bool, ret: Any, *args: Any) -> int:
        if before:
            t0[0] = time.perf_counter()
        else:
            calls.append((str(name), [(tuple(a.shape), str(a.dtype)) for a in args if hasattr(a, "shape")], time.perf_counter() - t0[0]))
        return 0

    vm = deployed._graph.sub._vm  # the artifact's VM: the kernels tunebench.load serves
    vm.set_instrument(instrument)
    for _ in range(runs):
        deployed(*inputs)
    vm.set_instrument(None)
    per = len(calls) // runs
    return [(calls[i][0], calls[i][1], statistics.median(c[2] for c in calls[i::per])) for i in range(per)]


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
    import tunebench
    from tunebench.target import host_fingerprint, physical_cores

    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
    import torch

    from tunebench.zoo import get_model

    model, inputs = get_model(args.model)
    folder = Path(tempfile.mkdtemp(prefix="in-situ-")) / "saved"
    with torch.no_grad(), tunebench.apply_history_best(args.log):
        manifest = tunebench.save(model, inputs, folder)
    with torch.no_grad():
        deployed = tunebench.load(folder)
        forward = whole(deployed, inputs, args.runs)
        calls = in_model(deployed, inputs, args.runs)
    host, date = host_fingerprint(), datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    command = f"python benchmarks/in_situ.py {shlex.join(sys.argv[1:])}"
    lines = [
        f"# {args.model}: served kernels in the model vs alone (cold: the tuner's protocol; warm)",
        f"Host: {host['cpu']} (LLVM `{host['llvm_cpu']}`), {os.environ['TVM_NUM_THREADS']} threads. Date: {date}. Command: `{command}`.",
        f"Served: {manifest.coverage}.",
        "",
    ]
    lines += compared(folder, calls)
    lines.append(f"whole forward, uninstrumented: {forward * 1e3:.3f} ms (kernels and the VM's builtins, no instrument)")
    print(lines[-1])
    (OUT / f"in-situ-{args.model}-{host['llvm_cpu']}.txt").write_text("\n".join(lines) + "\n")


def compared(folder: Path, calls: list[tuple[str, list[tuple[tuple[int, ...], str]], float]]) -> list[str]:
    """One line per kernel call (VM builtins left out): in the model, alone cold and warm; then the sums."""
    import tvm

    lib = tvm.runtime.load_module(str(folder / "model.so")).imports[0]  # the kernels' library under the VM executable
    lines, sums = [], [0.0, 0.0, 0.0]
    for name, shapes, t in calls:
        if name.startswith("vm.") or "." in name:
            continue
        cold, warm = alone(lib, name, shapes)
        sums = [sums[0] + t, sums[1] + cold, sums[2] + warm]
        lines.append(f"{name[:64]:64s} in model {t * 1e3:.3f}  alone cold {cold * 1e3:.3f}  warm {warm * 1e3:.3f} ms  model/cold {t / cold:.2f}")
        print(lines[-1], flush=True)
    model, cold, warm = (x * 1e3 for x in sums)
    lines.append(f"sum of kernels: in model {model:.3f}, alone cold {cold:.3f}, warm {warm:.3f} ms (model/cold {model / cold:.3f})")
    print(lines[-1])
    return lines


if __name__ == "__main__":
    main()
