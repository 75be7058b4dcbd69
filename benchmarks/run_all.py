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
MODEL = "resnet18"
TARGETS = ("avx2", "avx512")  # a shipped log each; avx512 only where the host can run it


def run(*args: str) -> None:
    """Run one step in the repository root; stop everything if it fails (a stale number is worse than none)."""
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def main() -> None:
    from tunebench.target import resolve_target

    tunebench = ("-m", "tunebench.cli")
    for target in TARGETS:
        log = f"tuning_logs/{MODEL}-{target}.jsonl"
        if not (ROOT / log).exists() or resolve_target(target, check=False).missing_flags():
            print(f"skipped {target}: no {log}, or this CPU cannot run it", flush=True)
            continue
        bench_json = str(RESULTS / f"{MODEL}-{target}.json")
        run(*tunebench, "bench", MODEL, "--log", log, "--target", target, "--iters", "60", "--json", bench_json)
        run(*tunebench, "plot", log, "-o", str(RESULTS / f"{MODEL}-{target}-curve.png"), "--bench-json", bench_json, "--model", MODEL, "--target", target)
    trials_per_minute = Path("benchmarks/trials_per_minute.py")
    if (ROOT / trials_per_minute).exists():
        run(str(trials_per_minute), "--json", str(RESULTS / "trials-per-minute.json"))
    else:
        print(f"skipped: {trials_per_minute} does not exist yet", flush=True)


if __name__ == "__main__":
    main()
