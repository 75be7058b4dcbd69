"""Regenerate every number and figure the README quotes, into benchmarks/results/.

Each step is the ordinary CLI, so the README's numbers come from commands anyone can rerun one by
one. Run from anywhere: paths are taken relative to the repository root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("benchmarks/results")
MODEL, TARGET = "resnet18", "avx2"


def run(*args: str) -> None:
    """Run one step in the repository root; stop everything if it fails (a stale number is worse than none)."""
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def main() -> None:
    log = f"tuning_logs/{MODEL}-{TARGET}.jsonl"
    bench_json = str(RESULTS / f"{MODEL}-{TARGET}.json")
    tunebench = ("-m", "tunebench.cli")
    run(*tunebench, "bench", MODEL, "--log", log, "--target", TARGET, "--json", bench_json)
    run(*tunebench, "plot", log, "-o", str(RESULTS / f"{MODEL}-{TARGET}-curve.png"), "--bench-json", bench_json, "--model", MODEL, "--target", TARGET)
    trials_per_minute = Path("benchmarks/trials_per_minute.py")
    if (ROOT / trials_per_minute).exists():
        run(str(trials_per_minute), "--json", str(RESULTS / "trials-per-minute.json"))
    else:
        print(f"skipped: {trials_per_minute} does not exist yet", flush=True)


if __name__ == "__main__":
    main()
