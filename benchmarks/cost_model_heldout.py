"""How well does a saved cost model rank schedules it has never seen? Spearman correlation on a held-out log.

For every workload of EVAL_LOG with at least ``--min`` successful records timed on one kind of
machine, the saved model (``--model``, a ``*.costmodel.npz``) scores each record's schedule and the
scores are ranked against the measured speeds; the mean over workloads is printed, beside the same
for an untrained model (what a search without a saved model starts from: random scores). Unlike
the per-batch correlation ``tune`` prints (8 candidates the model itself chose), this ranks whole
histories, good and bad schedules alike.

    .venv/bin/python benchmarks/cost_model_heldout.py --model A.costmodel.npz EVAL_LOG [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def _scores(model: Any, entry: Any, records: list[Any]) -> list[float]:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    target = tvm.target.Target(records[0].target)
    db = ms.database.MemoryDatabase()
    workload = db.commit_workload(entry.ms_workload().mod)
    ctx = ms.TuneContext(mod=workload.mod, target=target, space_generator="post-order-apply", search_strategy="evolutionary", task_name=entry.task)
    cands = [r.ms_record(workload).as_measure_candidate() for r in records]
    return [float(x) for x in model.predict(ctx, cands)]


def main() -> None:
    from tvm.s_tir import meta_schedule as ms

    from tunebench.logs.records import read_log
    from tunebench.search import costmodel
    from tunebench.search.driver import spearman

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_log", type=Path)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--min", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    log = read_log(args.eval_log, warn=False)
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in log.records:
        if r.ok and r.key in log.workloads:
            groups.setdefault((r.key, r.measured_class), []).append(r)
    saved = ms.cost_model.XGBModel(num_tuning_cores=2)
    costmodel.load(saved, args.model, here=next(iter(groups))[1] if groups else "")
    untrained = ms.cost_model.XGBModel(num_tuning_cores=2)
    rows = []
    for (key, machine), recs in sorted(groups.items()):
        if len(recs) < args.min:
            continue
        speed = [1.0 / r.latency for r in recs]
        rho = {name: spearman(_scores(m, log.workloads[key], recs), speed) for name, m in (("saved", saved), ("untrained", untrained))}
        rows.append({"task": log.workloads[key].task, "machine": machine, "records": len(recs), **rho})
        task = log.workloads[key].task[:44]
        print(f"{task:44s} {machine:14s} {len(recs):4d} records  saved {rho['saved']:+.2f}  untrained {rho['untrained']:+.2f}", flush=True)
    for name in ("saved", "untrained"):
        values = [row[name] for row in rows if row[name] == row[name]]
        print(f"mean Spearman over {len(values)} workloads, {name} model: {statistics.fmean(values):+.3f}" if values else f"{name}: no workload")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "eval_log": str(args.eval_log), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
