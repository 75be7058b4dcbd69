"""Serve one model from several logs and PyTorch eager, interleaved in one process: which log serves faster here?

Each log's best records (this machine's first, ``HistoryLog.best``) are applied to the model,
lowered the way that log says is fastest, and built as one module (``build.compile_model``),
so the logs differ only in their records. Outputs are checked against eager before timing.
Columns are interleaved with ``--settle`` untimed calls before each sample (see ``tunebench bench``).
PyTorch's and TVM's thread pools disturb each other on 2 cores (README, ``--settle``): ``--no-eager``
times the logs only (eager still checks their outputs), and ``LOGS`` left empty times eager alone,
so the two runtimes can be measured each in its own process.

    .venv/bin/python benchmarks/compare_logs.py resnet18 tuning_logs/resnet18-avx2.jsonl.gz /tmp/new.jsonl.gz --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any


def _compiled(model: str, log: Path) -> tuple[Any, str]:
    from tunebench.api import lower_model
    from tunebench.logs.records import read_log
    from tunebench.serve.build import compile_model
    from tunebench.serve.choose import target_for_log

    history = read_log(log, warn=False)
    lowered = lower_model(model, target_for_log(history), layout="blocked")
    compiled = compile_model(lowered.relax_mod, lowered.target, history, lowered.source, lowered.layout)
    return compiled, f"{compiled.coverage}, {compiled.lowering}"


def main() -> None:
    import torch

    from tunebench.bench.bench import set_threads
    from tunebench.target import host_fingerprint, physical_cores
    from tunebench.zoo import get_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("logs", nargs="*", type=Path)
    ap.add_argument("--no-eager", action="store_true", help="time the logs' columns only (eager still checks outputs)")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--settle", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    set_threads(physical_cores())
    module, inputs = get_model(args.model)
    columns: dict[str, Any] = {} if args.no_eager else {"eager": module}
    notes: dict[str, str] = {}
    for log in args.logs:
        columns[str(log)], notes[str(log)] = _compiled(args.model, log)
    times: dict[str, list[float]] = {name: [] for name in columns}
    with torch.no_grad():
        ref = module(*inputs)
        for name, fn in columns.items():
            if name == "eager":
                continue
            err = float((fn(*inputs) - ref).abs().max())
            assert torch.allclose(fn(*inputs), ref, rtol=1e-3, atol=1e-3), f"{name}: output differs from eager ({err:.3g})"
            notes[name] += f"; max abs error {err:.2g}"
        for _ in range(args.iters):
            for name, fn in columns.items():
                for _ in range(args.settle):
                    fn(*inputs)
                start = time.perf_counter()
                fn(*inputs)
                times[name].append((time.perf_counter() - start) * 1e3)
    eager = statistics.median(times["eager"]) if "eager" in times else float("nan")
    rows = []
    for name, samples in times.items():
        med, p90 = statistics.median(samples), statistics.quantiles(samples, n=10)[-1]
        rows.append({"column": name, "median_ms": med, "p90_ms": p90, "speedup_vs_eager": eager / med, "note": notes.get(name, "")})
        print(f"{name:50s} median {med:7.2f} ms  p90 {p90:7.2f} ms  {eager / med:5.2f}x eager  {notes.get(name, '')}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "iters": args.iters, "settle": args.settle, "host": host_fingerprint(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
