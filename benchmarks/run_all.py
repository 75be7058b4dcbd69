"""Rerun the ResNet18 benches and the tuning throughput into benchmarks/results/, then write docs/results.md.

Each step is an ordinary command (docs/results.md shows it beside its figures), so anyone can rerun them one by one. Run
from anywhere: paths are taken relative to the repository root. A shipped log whose records this
CPU cannot run (the avx512 log on an AVX2-only host) is skipped with the reason: benched anyway,
its tuned column would get no record and time nothing tuned.
The page is written from every file in benchmarks/results/ (``results_page.py``; ``make results``
writes it alone), so figures other scripts made earlier keep their own host, date and command.
``--dry-run`` prints the steps and the skips without running anything.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("benchmarks/results")
MODEL = "resnet18"
TUNEBENCH = ("-m", "tunebench.cli")
SETTLE = ("--iters", "60", "--settle", "1")
STRICT = ("--iters", "60")
# Per shipped log (tuning_logs/resnet18-<name>.jsonl.gz), the bench runs the README quotes: (suffix of
# the JSON file, options). The first (--settle 1) gives the tuning curve its eager line.
BENCHES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "avx512": [("", SETTLE), ("-strict", STRICT)],
    "avx2": [("", SETTLE), ("-strict", STRICT), ("-torch-avx2", (*SETTLE, "--torch-isa", "avx2"))],
}


def run(args: tuple[str, ...], dry_run: bool) -> None:
    """Run one step in the repository root; stop everything if it fails (a stale number is worse than none)."""
    print("+", " ".join(args), flush=True)
    if not dry_run:
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def unrunnable(log: Path) -> str:
    """Why this host cannot serve ``log``'s records ('' if it can): the choice ``bench`` and ``plot``
    make themselves (``choose.target_for_log``), which only picks a target whose ISA this CPU has."""
    from tunebench.logs.records import read_log
    from tunebench.serve.choose import target_for_log
    from tunebench.target import TargetSpec

    if not log.exists():
        return "no such file"
    records = read_log(log, warn=False)
    if target_for_log(records, default=""):
        return ""
    missing = sorted({f for r in records.records if r.ok for f in TargetSpec("log", r.target).missing_flags()})
    return f"this CPU lacks {', '.join(missing)}, which its records were tuned for" if missing else "it holds no successful LLVM record"


def bench_log(name: str, dry_run: bool) -> None:
    """One shipped log: the README's bench runs, the ``torch.compile`` backend path, the blocked-layout curve."""
    log = f"tuning_logs/{MODEL}-{name}.jsonl.gz"
    reason = unrunnable(ROOT / log)
    if reason:
        print(f"skipped {log}: {reason}", flush=True)
        return
    for suffix, options in BENCHES[name]:
        run((*TUNEBENCH, "bench", MODEL, "--log", log, *options, "--json", str(RESULTS / f"{MODEL}-{name}{suffix}.json")), dry_run)
    run((*TUNEBENCH, "apply", MODEL, "--log", log, "--runs", "40"), dry_run)
    curve, bench_json = RESULTS / f"{MODEL}-{name}-curve.png", RESULTS / f"{MODEL}-{name}.json"
    run((*TUNEBENCH, "plot", log, "-o", str(curve), "--model", MODEL, "--layout", "blocked", "--bench-json", str(bench_json)), dry_run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the steps, and which logs are skipped and why, without running them")
    dry_run = parser.parse_args().dry_run
    for name in BENCHES:
        bench_log(name, dry_run)
    run(("benchmarks/trials_per_minute.py", "--trials", "32", "--rounds", "2", "--json", str(RESULTS / "trials-per-minute.json")), dry_run)
    run(("benchmarks/results_page.py",), dry_run)


if __name__ == "__main__":
    main()
