"""Warm start: how long a new process takes from exec to its first ResNet18 output, the build on disk.

A server restarts, or a second worker starts. Two ways to serve the tuned model:

- ``torch.compile``: the compile cache (``~/.cache/tunebench``) already holds the TVM library, the
  log's serving digest and the remembered split; the process imports torch and tunebench, enters
  ``apply_history_best``, compiles (dynamo's trace) and calls.
- ``deploy``: ``tunebench.save`` wrote an artifact folder once; the process imports torch and
  tunebench and calls ``tunebench.load(folder)``: no dynamo, no TVM compiler. Timed with
  ``TVM_USE_RUNTIME_LIB=1`` (TVM's 3 MB runtime library only) and without it.

One process fills a fresh cache (and writes the artifact); then ``--runs`` fresh processes per way
each report their stages; "from exec" is the wall time from just before the parent spawns the
child to the child's first output (interpreter start-up included). Medians over the runs.

    .venv/bin/python benchmarks/warm_start.py --runs 5 --json benchmarks/results/warm-start-znver4.json
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

ROOT = Path(__file__).resolve().parents[1]

COMPILE = """
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import tvm, tunebench
from tunebench.zoo import get_model
t2 = time.perf_counter()
model, (x,) = get_model({model!r})
t3 = time.perf_counter()
with tunebench.apply_history_best({log!r}):
    t4 = time.perf_counter()
    fast = torch.compile(model, backend="tunebench")
    with torch.no_grad():
        fast(x)
t5 = time.perf_counter()
t_exec = time.time() - {spawned}
from tunebench.serve.cache import STATS
import json
print(json.dumps({{"import torch": t1 - t0, "import tunebench + tvm": t2 - t1, "model": t3 - t2, "apply_history_best": t4 - t3,
                  "compile + first call": t5 - t4, "in script": t5 - t0, "from exec": t_exec, "plan_hits": STATS.plan_hits, "compiles": STATS.compiles}}))
"""

DEPLOY = """
import time
t0 = time.perf_counter()
import tunebench, torch
t1 = time.perf_counter()
served = tunebench.load({folder!r})
t2 = time.perf_counter()
x = torch.randn({shape})
served(x)
t3 = time.perf_counter()
t_exec = time.time() - {spawned}
import json, sys
print(json.dumps({{"import torch + tunebench": t1 - t0, "load (import tvm, library, VM)": t2 - t1, "first call": t3 - t2, "in script": t3 - t0,
                  "from exec": t_exec, "tvm compiler loaded": "tvm.relax" in sys.modules}}))
"""

SAVE = """
import tunebench
from tunebench.zoo import get_model
model, inputs = get_model({model!r})
print(tunebench.save(model, inputs, {folder!r}, logs={log!r}).coverage)
"""


def _child(code: str, cache_dir: str, runtime_only: bool = False, **fields: object) -> dict:
    env = {**os.environ, "TUNEBENCH_CACHE_DIR": cache_dir}
    env.pop("TVM_USE_RUNTIME_LIB", None)
    if runtime_only:
        env["TVM_USE_RUNTIME_LIB"] = "1"
    spawned = time.time()
    proc = subprocess.run([sys.executable, "-c", code.format(spawned=spawned, **fields)], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last) if last.startswith("{") else {"said": last}


def _report(name: str, runs: list[dict]) -> dict[str, float]:
    stages = [k for k, v in runs[0].items() if isinstance(v, float)]
    medians = {s: statistics.median(r[s] for r in runs) for s in stages}
    print(f"{name}:")
    for s in stages:
        spread = ", ".join(f"{r[s]:.2f}" for r in runs)
        print(f"  {s:<32} median {medians[s]:5.2f} s   (runs: {spread})")
    return medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--log", default="tuning_logs/resnet18-avx2.jsonl.gz")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from tunebench.target import host_fingerprint
    from tunebench.zoo import get_model

    shape = tuple(get_model(args.model)[1][0].shape)
    with tempfile.TemporaryDirectory() as cache_dir:
        folder = str(Path(cache_dir) / "artifact")
        cold = _child(COMPILE, cache_dir, model=args.model, log=args.log)
        saved = _child(SAVE, cache_dir, model=args.model, log=args.log, folder=folder)["said"]
        ways = {
            "torch.compile, warm disk cache": lambda: _child(COMPILE, cache_dir, model=args.model, log=args.log),
            "deploy, TVM_USE_RUNTIME_LIB=1": lambda: _child(DEPLOY, cache_dir, True, folder=folder, shape=shape),
            "deploy, full TVM": lambda: _child(DEPLOY, cache_dir, folder=folder, shape=shape),
        }
        runs: dict[str, list[dict]] = {name: [] for name in ways}
        for _ in range(args.runs):  # the ways interleaved, so a slow spell of the host hits all of them
            for name, run in ways.items():
                runs[name].append(run())
    host = host_fingerprint()
    print(f"{args.model}, {args.log}; host {host['cpu']} ({host['llvm_cpu']}); cold process (empty cache): {cold['from exec']:.2f} s; saved: {saved}")
    medians = {name: _report(name, r) for name, r in runs.items()}
    if args.json:
        doc = {"model": args.model, "log": args.log, "host": host, "date": time.strftime("%Y-%m-%d"), "cold": cold, "runs": runs, "medians": medians}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
