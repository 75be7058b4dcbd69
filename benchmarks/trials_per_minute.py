"""Tuning throughput before and after tunebench's changes: trials per minute on one fixed workload.

    .venv/bin/python benchmarks/trials_per_minute.py [--trials 48] [--rounds 2] [--json PATH]

"before" is MetaSchedule as shipped: ``ms.tune_tasks`` with its C++ task scheduler, stock
``LocalBuilder`` (a new process pool per batch), ``LocalRunner``, JSON database and default
evolutionary search. "after" is ``tunebench.search.driver.tune_tasks`` (persistent builder pool, fast
tensor-intrinsic import, population scaled to the budget, per-batch log appends). Each run is a
fresh process (one-time import costs count, as they do for a user), both tune the two-conv test
model with the same trial budget and batch size, alternating so that machine drift hits both.
Time counts from the start of tuning (after lowering) to its end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "tests/fixtures/tiny.py:tiny_conv"
VARIANTS = ("before", "after")


def run_variant(variant: str, trials: int, work_dir: str) -> dict[str, float]:
    """Tune in this process; return trials measured and seconds spent."""
    from tunebench import api

    lowered = api.lower_model(MODEL, "avx2", layout="nchw")
    batch = max(8, trials // len(lowered.tasks))
    start = time.time()
    if variant == "before":
        from tvm.s_tir import meta_schedule as ms

        extracted = ms.relax_integration.extract_tasks(lowered.relax_mod, lowered.target.tvm())
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(extracted, work_dir)
        db = ms.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=work_dir,
            max_trials_global=trials,
            max_trials_per_task=batch,
            num_trials_per_iter=batch,
        )
        measured = len(db.get_all_tuning_records())
    else:
        from tunebench.search.driver import tune_tasks

        state = tune_tasks(lowered.tasks, lowered.target, Path(work_dir) / "log.jsonl", trials=trials, trials_per_task=batch)
        measured = state.new_trials
    return {"trials": measured, "seconds": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one run, in a child
    args = parser.parse_args()
    if args.variant:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_variant(args.variant, args.trials, tmp)))
        return

    from rich.console import Console
    from rich.table import Table

    env = {**os.environ, "TVM_NUM_THREADS": str(os.cpu_count() or 1)}  # both time kernels on every core
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for i in range(args.rounds):
        for variant in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
            cmd = [sys.executable, __file__, "--variant", variant, "--trials", str(args.trials)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=Path(__file__).resolve().parents[1])
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    table = Table(title=f"tuning throughput: {MODEL}, {args.trials} trials per run, {args.rounds} runs each, fresh process per run")
    for col in ("variant", "trials/min (median)", "seconds (median)", "runs (trials, s)"):
        table.add_column(col, justify="left" if col in ("variant", "runs (trials, s)") else "right")
    summary = {}
    for variant, rs in runs.items():
        rate = statistics.median(r["trials"] / r["seconds"] * 60 for r in rs)
        secs = statistics.median(r["seconds"] for r in rs)
        summary[variant] = {"trials_per_min": rate, "seconds": secs, "runs": rs}
        table.add_row(variant, f"{rate:.1f}", f"{secs:.1f}", ", ".join(f"({r['trials']:.0f}, {r['seconds']:.0f})" for r in rs))
    Console().print(table)
    print(f"speed-up after/before: {summary['after']['trials_per_min'] / summary['before']['trials_per_min']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        from tunebench.target import host_fingerprint

        # date, command and host: docs/results.md shows them beside the figures
        command = " ".join(["benchmarks/trials_per_minute.py", *sys.argv[1:]])
        doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "command": command, "host": host_fingerprint()}
        doc |= {"model": MODEL, "trials": args.trials, "rounds": args.rounds, "variants": summary}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
