"""Does a saved cost model help the next search? Rank correlation of predicted vs measured, warm vs cold.

Copies LOG (and its ``.costmodel.npz``) into two scratch folders and resumes each with the same
budget in its own process: one with the saved cost model (warm start), one without it. Without
it, the model starts untrained (its first predictions are random) unless LOG holds records timed
on this machine, from which it is retrained as before persistence existed. Prints, per run, the
Spearman rank correlation between the model's scores and the measured speeds of each batch
(``SearchState.predictions``): 1 = ranked as the clock did, 0 = no better than chance.

    .venv/bin/python benchmarks/cost_model_warm_start.py resnet18 --log LOG --more 64 [--from OTHER_LOG]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import json, sys
from tunebench import api
state = api.tune(sys.argv[1], sys.argv[2], log=sys.argv[3], more=int(sys.argv[4]), transfer_from=json.loads(sys.argv[5]))
print(json.dumps({"cost_model": state.cost_model, "predictions": state.predictions, "trials": state.new_trials}))
"""


def run(model: str, target: str, log: Path, more: int, warm: bool, transfer_from: list[str]) -> dict:
    from tunebench.search.costmodel import model_path

    work = Path(tempfile.mkdtemp(prefix="warm-" if warm else "cold-"))
    copy = work / log.name
    if log.is_file():  # else the run starts an empty log (a transfer: only --from logs are priors)
        shutil.copy(log, copy)
    if warm and model_path(log).is_file():
        shutil.copy(model_path(log), model_path(copy))
    sources = []
    for src in transfer_from:  # --from logs too, with their cost models only in the warm run
        dst = work / f"from-{Path(src).name}"
        shutil.copy(src, dst)
        if warm and model_path(src).is_file():
            shutil.copy(model_path(src), model_path(dst))
        sources.append(str(dst))
    out = subprocess.run([sys.executable, "-c", RUN, model, target, str(copy), str(more), json.dumps(sources)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_per_task(predictions: list[list]) -> dict[str, float]:
    """Each task's first searched (not carried-over) batch: what the model knew before this host's
    search taught it anything about that task. One batch is noise (8-16 candidates the model itself
    ranked best); the mean over a model's tasks is the measure."""
    firsts: dict[str, float] = {}
    for task, carried, rho in predictions:
        if not carried and rho == rho and task not in firsts:
            firsts[task] = rho
    return firsts


def summary(values: dict[str, float]) -> dict[str, float]:
    xs = list(values.values())
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / max(1, len(xs) - 1)
    return {"n": len(xs), "mean": mean, "stderr": (var / len(xs)) ** 0.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--target", default="avx2")
    ap.add_argument("--more", type=int, default=64)
    ap.add_argument("--from", dest="transfer_from", action="append", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = {}
    for warm in (True, False):  # warm first: the cold run must not profit from a warmer page cache alone
        r = run(args.model, args.target, args.log, args.more, warm, args.transfer_from)
        name = "warm" if warm else "cold"
        results[name] = r
        searched = [rho for _, carried, rho in r["predictions"] if not carried]
        print(f"{name}: {r['cost_model'] or 'no saved model'}; {r['trials']} trials")
        print(f"  rank correlation per batch (carried-over batches marked *): {', '.join(f'{rho:.2f}' + ('*' if c else '') for _, c, rho in r['predictions'])}")
        if searched:
            print(f"  first search batch: {searched[0]:.2f}; mean of first 3: {sum(searched[:3]) / len(searched[:3]):.2f}")
        carried = {f"{i}": rho for i, (_, c, rho) in enumerate(r["predictions"]) if c and rho == rho}
        if carried:
            r["carried_over_batches"] = stats = summary(carried)
            print(f"  carried-over batches (the first schedules timed): mean {stats['mean']:+.2f} (standard error {stats['stderr']:.2f}, n={len(carried)})")
        firsts = first_per_task(r["predictions"])
        if firsts:
            r["first_batch_per_task"] = stats = summary(firsts)
            print(f"  each task's first search batch, over {len(firsts)} tasks: mean {stats['mean']:+.2f} (standard error {stats['stderr']:.2f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
