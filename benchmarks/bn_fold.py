"""What folding batch norm into the conv weights saves, with the schedules held fixed.

    .venv/bin/python benchmarks/bn_fold.py mobilenet_v2 --log tuning_logs/mobilenet_v2-avx2.jsonl.gz

Each conv task of the model is lowered twice: as tunebench lowers it (the batch norm decomposed
into the conv's epilogue: subtract, divide, multiply, add per output element) and with
``lowering.batchnorm`` (folded into the weights and a bias). Both are scheduled by the same record,
the log's fastest timed on this machine class for the unfolded task (the folded one through the
conv's anchor block, ``traces.refitted``), built, and timed the tuner's way (one call after a cache
flush of all but the input), in alternated rounds. Prints per task and weighted sums; writes
``benchmarks/results/bn-fold-<model>-<llvm cpu>.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--log", required=True)
    p.add_argument("--target", default="avx2")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    import tunebench  # noqa: F401  (before tvm: tunebench sets up the import order)
    from tunebench.target import host_fingerprint, llvm_system_cpu, physical_cores, resolve_target

    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))  # TVM's own default is half the hardware threads
    spec = resolve_target(args.target, check=False)
    lines = [
        f"# {args.model}: batch norm in the conv epilogue vs folded into the weights, same schedules",
        f"Host: {host_fingerprint()['cpu']} (LLVM `{llvm_system_cpu()}`), {os.environ['TVM_NUM_THREADS']} threads. "
        f"Date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}. Command: `python {shlex.join(sys.argv)}`.",
        "",
    ]
    plain_sum = folded_sum = 0.0
    for name, weight, plain, folded in _pairs(args.model, args.log, spec, args.rounds):
        plain_sum, folded_sum = plain_sum + weight * plain, folded_sum + weight * folded
        lines.append(f"{name[:56]:56s} x{weight} epilogue {plain:.3f} folded {folded:.3f} ms ({folded / plain:.3f})")
        print(lines[-1], flush=True)
    lines.append(f"weighted sum: epilogue {plain_sum:.3f} ms, folded {folded_sum:.3f} ms ({folded_sum / plain_sum:.3f})")
    print(lines[-1])
    (OUT / f"bn-fold-{args.model}-{llvm_system_cpu()}.txt").write_text("\n".join(lines) + "\n")


def _pairs(model_name: str, log_path: str, spec: Any, rounds: int) -> Any:
    """(folded task name, weight, ms with the epilogue, ms folded) per conv task with a record here."""
    from tunebench.logs.records import read_log
    from tunebench.logs.traces import op_signature, refitted, schedule_for
    from tunebench.lowering import frontend
    from tunebench.lowering.batchnorm import fold_batch_norms
    from tunebench.lowering.tasks import extract_tasks
    from tunebench.zoo import get_model

    model, inputs = get_model(model_name)
    exported = frontend.export(model, inputs)
    unfolded = extract_tasks(frontend.optimize(frontend.to_relax(exported), spec, layout="blocked"), spec)
    folded = extract_tasks(frontend.optimize(fold_batch_norms(frontend.to_relax(exported)), spec, layout="blocked"), spec)
    log = read_log(log_path)
    here = spec.measurement_class()
    best: dict[str, Any] = {}
    for r in log.records:
        if r.ok and r.measured_class == here and (r.key not in best or r.latency < best[r.key].latency):
            best[r.key] = r
    twins = {(op_signature(t.name), _shapes(t)): t for t in unfolded if t.workload_key in best}
    for t in folded:
        twin = twins.get((op_signature(t.name), _shapes(t)))
        if twin is None or "conv" not in t.anchor:
            continue
        record, entry = best[twin.workload_key], log.workloads[twin.workload_key]
        pair = schedule_for(record.trace, twin.mod, entry, spec.tvm()), refitted(record.trace, t.mod, entry, spec.tvm())
        if None not in pair:
            yield (t.name, t.weight, *_timed_alternately(pair, spec, rounds))


def _shapes(task: Any) -> tuple[tuple[int, ...], ...]:
    """The conv's data and weight shapes: what a folded task shares with its unfolded twin."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return tuple(tuple(int(d) for d in a.shape) for a in ArgInfo.from_prim_func(task.mod["main"])[:2])


def _timed_alternately(schedules: tuple[Any, Any], spec: Any, rounds: int) -> list[float]:
    """Median ms of each schedule's kernel, ``rounds`` blocks of 15 cold calls each, alternated."""
    import numpy as np
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    rng = np.random.default_rng(0)
    timers = []
    for sch in schedules:
        lib = tvm.compile(sch.mod, target=spec.tvm())
        data = [tvm.runtime.tensor(rng.random([int(d) for d in a.shape]).astype(a.dtype)) for a in ArgInfo.from_prim_func(sch.mod["main"])]
        timers.append((lib.mod.time_evaluator("main", tvm.cpu(), number=1, repeat=15, f_preproc="cache_flush_cpu_non_first_arg"), data))
    samples: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, (timer, data) in enumerate(timers):
            samples[i] += list(timer(*data).results)
    return [statistics.median(s) * 1e3 for s in samples]


if __name__ == "__main__":
    main()
