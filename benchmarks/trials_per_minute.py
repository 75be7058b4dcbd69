"""Tuning throughput: trials per minute on a fixed small workload, MetaSchedule's stock builder
against tunebench's persistent-pool builder, measured alternately in one run on one machine.

    .venv/bin/python benchmarks/trials_per_minute.py [--trials 48] [--rounds 2] [--json PATH]

Each round tunes the same two-conv model from an empty log with each builder (order alternates
between rounds so machine drift hits both), and reports trials/min and where the time went.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tunebench import api
from tunebench.measure import MeasureConfig
from tunebench.search import tune_tasks

MODEL = "tests/fixtures/tiny.py:tiny_conv"
VARIANTS = {"stock LocalBuilder": False, "persistent builder": True}


def one_run(tasks: list, target: object, persistent: bool, trials: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        state = tune_tasks(tasks, target, Path(tmp) / "log.jsonl", more=trials, measure=MeasureConfig(persistent_builder=persistent))
        wall = time.time() - start
    return {"trials": state.new_trials, "wall_s": wall, "trials_per_min": state.new_trials / wall * 60, **{f"{k}_s": v for k, v in state.seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    lowered = api.lower_model(MODEL, "avx2")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for i in range(args.rounds):
        order = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            runs[name].append(one_run(lowered.tasks, lowered.target, VARIANTS[name], args.trials))
    table = Table(title=f"tuning throughput, {MODEL}, {args.trials} trials x {args.rounds} rounds")
    phases = sorted({k for rs in runs.values() for r in rs for k in r if k.endswith("_s") and k != "wall_s"})
    for col in ["builder", "trials/min (median)", "wall s (median)", *[p.removesuffix("_s") + " s" for p in phases]]:
        table.add_column(col, justify="left" if col == "builder" else "right")
    summary = {}
    for name, rs in runs.items():
        med = {k: statistics.median(r.get(k, 0.0) for r in rs) for k in ["trials_per_min", "wall_s", *phases]}
        summary[name] = {"median": med, "runs": rs}
        table.add_row(name, f"{med['trials_per_min']:.1f}", f"{med['wall_s']:.1f}", *[f"{med[p]:.1f}" for p in phases])
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": MODEL, "trials": args.trials, "rounds": args.rounds, "variants": summary}, indent=2))


if __name__ == "__main__":
    main()
