"""Does Winograd pay on this host? Its tasks searched cold, beside the direct blocked convs' records.

    .venv/bin/python benchmarks/winograd_cold.py resnet18 --log tuning_logs/resnet18-avx512.jsonl.gz \
        --target '{"kind": "llvm", "mcpu": "skylake-avx512"}' --timeout 600

Lowers MODEL in NCHW with its Winograd tasks (``lower_model(winograd=True)``) and searches only
those, cold, into a scratch log (``--out``; ``--timeout 0`` reports on it without searching),
starting from LOG's Winograd records (the transfer phase times them here first). Then prints, per
Winograd task, its best on this machine class beside the best of LOG's direct blocked conv tasks
of the same conv shape (input, weight and output shapes, the blocked ones unblocked), each timed
here. A search of a few hundred trials cannot prove Winograd never wins; it says whether its
schedules come near.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tunebench.logs.records import read_log
from tunebench.lowering.model import lower_model
from tunebench.lowering.winograd import implementation
from tunebench.search.driver import tune_tasks
from tunebench.target import resolve_target


def unblocked(shape: tuple[int, ...]) -> tuple[int, ...]:
    """NCHW of an NCHW[x]c activation, OIHW of an OIHW[i]i[o]o kernel; other shapes as they are."""
    if len(shape) == 5:
        n, c1, h, w, c2 = shape
        return n, c1 * c2, h, w
    if len(shape) == 6:
        o1, i1, kh, kw, i2, o2 = shape
        return o1 * o2, i1 * i2, kh, kw
    return shape


def param_shapes(entry: Any) -> set[tuple[int, ...]]:
    """The unblocked shapes of a logged workload's parameters."""
    func = next(iter(entry.ms_workload().mod.functions.values()))
    return {unblocked(tuple(int(x) for x in p.shape)) for p in func.params}  # TVM 0.27: the params are buffers


def bests_by_conv(log_path: str, here: str, sigs: list[Any], impl_mark: str) -> dict[Any, float]:
    """Per conv shape in ``sigs``: the best latency on ``here`` of LOG's tasks named with ``impl_mark`` computing it."""
    log = read_log(log_path, warn=False)
    best = log.best(usable=lambda r: r.measured_class == here)
    out: dict[Any, float] = {}
    for key, entry in log.workloads.items():
        if impl_mark not in entry.task or key not in best:
            continue
        shapes = param_shapes(entry)
        for sig in sigs:
            if implementation(shapes, sig) is not None:
                out[sig] = min(out.get(sig, float("inf")), best[key].latency)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--log", required=True, help="the model's log: Winograd records to start from, direct records to compare with")
    p.add_argument("--target", default="avx512")
    p.add_argument("--timeout", type=float, default=600, help="seconds of Winograd search; 0: report on --out as it is")
    p.add_argument("--out", default=None, help="scratch log for the Winograd search (default: /tmp/winograd-MODEL.jsonl.gz)")
    a = p.parse_args()
    spec = resolve_target(a.target, None)
    here = spec.measurement_class()
    out = Path(a.out or f"/tmp/winograd-{a.model}.jsonl.gz")
    tasks = [t for t in lower_model(a.model, spec, layout="nchw", winograd=True).tasks if t.impl == "winograd"]
    if a.timeout > 0:
        state = tune_tasks(tasks, spec, out, timeout=a.timeout, transfer_from=[a.log])
        print(f"Winograd search: {state.new_trials} trials into {out}")
    sigs = sorted({t.conv for t in tasks})
    winograd, direct = bests_by_conv(str(out), here, sigs, "conv2d_winograd"), bests_by_conv(a.log, here, sigs, "conv2d_NCHWc")
    print(f"best per conv shape on {here}, ms (Winograd from {out}, direct blocked from {a.log}):")
    for sig in sigs:
        w, d = winograd.get(sig, float("nan")), direct.get(sig, float("nan"))
        print(f"  {sig!s:24s} Winograd {w * 1e3:7.3f}  direct blocked {d * 1e3:7.3f}  Winograd/direct {w / d:5.2f}")


if __name__ == "__main__":
    main()
