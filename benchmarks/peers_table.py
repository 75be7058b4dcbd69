"""The zoo against what a user would run instead: eager, ONNX Runtime, OpenVINO (fp32) and tunebench, per model.

For each zoo model whose shipped log for ``--target`` (default: this host's widest ISA) this CPU can run:

    tunebench bench MODEL --log LOG --peers --saved --no-untuned --alone ROUNDS --iters N \
        --json benchmarks/results/peers/<model>-<target>-<llvm cpu>.json

each column alone in its own process, rounds alternated (``bench.run_alone``: on 2 cores the runtimes'
spinning threads disturb whichever column runs next in one process), then one Markdown table
``benchmarks/results/peers/table-<target>-<llvm cpu>.md``: medians with p10-p90, and the faster
peer's median over tunebench's (above 1: tunebench is faster than both), pooled and by each column's
fastest process (each process here runs in one of two speeds ~30% apart, every runtime alike).

    .venv/bin/python benchmarks/peers_table.py [--rounds 3] [--iters 20] [--only resnet18,mobilenet_v2] [--no-run]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("benchmarks/results/peers")
COLUMNS = ("eager", "onnxruntime", "openvino", "tunebench-tuned", "tunebench-saved")


def _bench(model: str, log: Path, out: Path, rounds: int, iters: int) -> None:
    cmd = [sys.executable, "-m", "tunebench.cli", "bench", model, "--log", str(log), "--peers", "--saved", "--no-untuned"]
    cmd += ["--alone", str(rounds), "--iters", str(iters), "--warmup", "5", "--json", str(out)]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def _cell(c: dict[str, Any]) -> str:
    if c.get("status") != "ok":
        return f"({c.get('status', 'absent')})"
    return f"{c['median_s'] * 1e3:.2f} ({c['p10_s'] * 1e3:.2f}-{c['p90_s'] * 1e3:.2f})"


def row(doc: dict[str, Any]) -> str:
    """One model's row: each column's median (p10-p90) ms, and the faster peer over tunebench."""
    from tunebench.bench.bench import faster_peer_over

    cols = {c["name"]: c for c in doc["columns"]}

    def vs(name: str, stat: str = "median_s") -> str:
        ratio = faster_peer_over(doc["columns"], name, stat)
        return f"{ratio:.2f}" if ratio else "-"

    cells = " | ".join(_cell(cols.get(n, {})) for n in COLUMNS)
    ratios = f"{vs('tunebench-tuned')} | {vs('tunebench-saved')} | {vs('tunebench-saved', 'fastest_process_s')}"
    return f"| {doc['model']} | {cells} | {ratios} | {cols.get('tunebench-tuned', {}).get('coverage') or '-'} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--target", default=None, help="the logs' preset (default: this host's widest ISA)")
    ap.add_argument("--only", default="", help="comma-separated models to bench; the others are tabulated from their JSON")
    ap.add_argument("--no-run", action="store_true", help="tabulate the JSON files already written")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run_all import unrunnable

    from tunebench.target import host_fingerprint, host_preset
    from tunebench.zoo import zoo_names

    target, cpu = args.target or host_preset()[0], host_fingerprint()["llvm_cpu"]
    (ROOT / OUT).mkdir(parents=True, exist_ok=True)
    rows = []
    for model in zoo_names():
        log, out = Path("tuning_logs") / f"{model}-{target}.jsonl.gz", OUT / f"{model}-{target}-{cpu}.json"
        reason = unrunnable(ROOT / log)
        if reason:
            print(f"skipped {model}: {log}: {reason}", flush=True)
            continue
        if not args.no_run and (not args.only or model in args.only.split(",")):
            _bench(model, log, out, args.rounds, args.iters)
        if (ROOT / out).is_file():
            rows.append(row(json.loads((ROOT / out).read_text())))
    head = "| model | " + " | ".join(f"{n} ms" for n in COLUMNS) + " | best peer / tuned | best peer / saved | same, fastest processes | tunebench served |"
    table = "\n".join([head, "|" + "---|" * (len(COLUMNS) + 5), *rows]) + "\n"
    (ROOT / OUT / f"table-{target}-{cpu}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
