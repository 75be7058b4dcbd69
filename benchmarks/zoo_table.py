"""The zoo table: every model with a shipped log, eager vs inductor vs tunebench, with what its log cost.

For each ``tuning_logs/<model>-<target>.jsonl.gz`` of a zoo model whose records this CPU can run,
runs ``tunebench bench MODEL --log LOG --iters N --settle 1 --saved --json benchmarks/results/zoo/<model>-<target>.json``
(each bench in its own process, one after another: never two at once), then writes one Markdown table
(``benchmarks/results/zoo/table-<target>.md``) and a bar chart of the speed-ups (``zoo-<target>.png``). ``--no-run``
tabulates the JSON files already there; ``--only bert_tiny`` benches that model and tabulates the rest.

Per row: medians and p10-p90 of eager, inductor, tunebench (the ``torch.compile`` backend path) and
the same build saved and loaded (``tunebench.save``/``load``, no dynamo), speed-ups vs eager, tasks
tuned, the trials in the log and the tuning time behind it: the sum of the gaps between consecutive
record batches, gaps over 10 minutes left out (they separate runs), so an estimate of the wall
clock spent tuning, on whichever machine did it.

    .venv/bin/python benchmarks/zoo_table.py --iters 30
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("benchmarks/results/zoo")
GAP_S = 600.0


def tuning_cost(log: Path) -> tuple[int, float]:
    """Trials in ``log`` and the minutes of tuning they took (see module docstring)."""
    from tunebench.logs.records import read_log

    records = read_log(log, warn=False).records
    times = sorted({r.time for r in records})
    active = sum(b - a for a, b in itertools.pairwise(times) if b - a <= GAP_S)
    return len(records), active / 60


def _bench(model: str, log: Path, target: str, iters: int) -> Path:
    out = OUT / f"{model}-{target}.json"
    cmd = [sys.executable, "-m", "tunebench.cli", "bench", model, "--log", str(log), "--iters", str(iters), "--settle", "1", "--no-untuned", "--saved"]
    cmd += ["--json", str(out)]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return out


def _row(doc: dict[str, Any], trials: int, minutes: float) -> str:
    cols = {c["name"]: c for c in doc["columns"]}

    def cell(name: str) -> str:
        c = cols.get(name, {})
        if c.get("status") != "ok":
            return f"({c.get('status', 'absent')})"
        return f"{c['median_s'] * 1e3:.2f} ({c['p10_s'] * 1e3:.1f}-{c['p90_s'] * 1e3:.1f})"

    tuned = cols.get("tunebench-tuned", {})

    def speedup(name: str) -> str:
        c = cols.get(name, {})
        return f"**{c['speedup_vs_eager']:.2f}x**" if c.get("status") == "ok" else "-"

    inductor = cols.get("inductor", {}).get("speedup_vs_eager")
    host = f"{doc['host']['cpu']} ({doc['host']['llvm_cpu']}), {doc['host']['cores']} cores"
    return (
        f"| {doc['model']} | {cell('eager')} | {cell('inductor')} ({inductor:.2f}x) | {cell('tunebench-tuned')} | {speedup('tunebench-tuned')} "
        f"| {cell('tunebench-saved')} | {speedup('tunebench-saved')} "
        f"| {tuned.get('coverage', '-')} | {trials} | {minutes:.0f} | {host} | {doc['date'][:10]} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--target", default="avx2")
    ap.add_argument("--no-run", action="store_true", help="tabulate the JSON files already written")
    ap.add_argument("--only", default="", help="comma-separated models to bench; the others are tabulated from their JSON")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run_all import unrunnable

    from tunebench.zoo import zoo_names

    (ROOT / OUT).mkdir(parents=True, exist_ok=True)
    rows, speedups = [], {}
    for model in zoo_names():
        log = Path("tuning_logs") / f"{model}-{args.target}.jsonl.gz"
        reason = unrunnable(ROOT / log)
        if reason:
            print(f"skipped {model}: {log}: {reason}", flush=True)
            continue
        rerun = not args.no_run and (not args.only or model in args.only.split(","))
        path = _bench(model, log, args.target, args.iters) if rerun else OUT / f"{model}-{args.target}.json"
        doc = json.loads((ROOT / path).read_text())
        rows.append(_row(doc, *tuning_cost(ROOT / log)))
        tuned = next(c for c in doc["columns"] if c["name"] == "tunebench-tuned")
        speedups[model] = tuned.get("speedup_vs_eager") or 0.0
    head = (
        "| model | eager ms (p10-p90) | inductor ms | tunebench ms | speed-up | saved (deploy) ms | speed-up | served "
        "| trials in log | tuning min | host | date |"
    )
    table = "\n".join([head, "|" + "---|" * 12, *rows]) + "\n"
    (ROOT / OUT / f"table-{args.target}.md").write_text(table)
    print(table)
    _plot(speedups, ROOT / OUT / f"zoo-{args.target}.png", args.target)


def _plot(speedups: dict[str, float], path: Path, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(speedups), list(speedups.values()), color="tab:blue")
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_ylabel("speed-up vs eager (median)")
    ax.set_title(f"tunebench (torch.compile backend) vs PyTorch eager, {target} logs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
