"""What serving costs beside the kernels: one build, three ways to call it, alternated in one process.

    .venv/bin/python benchmarks/serving_paths.py mobilenet_v2 --log tuning_logs/mobilenet_v2-avx2.jsonl.gz \
        --json benchmarks/results/serving-paths-mobilenet_v2-znver3.json

The model is saved with LOG's records (``tunebench.save``), then timed as TVM's VM alone (called on a
TVM tensor: the kernels and the VM, nothing else), as ``tunebench.load`` serves it (torch tensors in
and out) and through ``torch.compile(model, backend="tunebench")`` inside ``apply_history_best(LOG)``
(dynamo's guards, the dispatcher's per-call key, the FX graph around the TVM call). All three run the
same library, so their differences are the serving paths' own cost. Rounds alternate the paths
(``--calls`` timed calls each after 5 untimed), so host drift hits all three alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tunebench  # before torch (imported in the functions): it bounds libgomp's spinning


def paths(model_name: str, log: str, folder: Path) -> dict[str, Callable[[], Any]]:
    """The three callables, each warmed up once: same build, same inputs."""
    import torch
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from tunebench.serve.deploy import LIBRARY
    from tunebench.zoo import get_model

    model, inputs = get_model(model_name)
    model.eval()
    with torch.no_grad(), tunebench.apply_history_best(log):
        tunebench.save(model, inputs, folder)
        compiled = torch.compile(model, backend="tunebench")
        compiled(*inputs)
    deployed = tunebench.load(folder)
    main = VirtualMachine(tvm.runtime.load_module(str(folder / LIBRARY)), tvm.cpu())["main"]
    x = tvm.runtime.tensor(inputs[0].numpy())
    return {"vm alone": lambda: main(x), "tunebench.load": lambda: deployed(*inputs), "torch.compile": lambda: compiled(*inputs)}


def time_paths(calls: dict[str, Callable[[], Any]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Seconds per call of each path, rounds alternated."""
    import torch

    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for _ in range(rounds):
            for name, call in calls.items():
                for _ in range(5):
                    call()
                for _ in range(per_round):
                    t = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--log", required=True)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    from tunebench.target import host_fingerprint

    with tempfile.TemporaryDirectory(prefix="serving-paths-") as tmp:
        times = time_paths(paths(args.model, args.log, Path(tmp) / "saved"), args.rounds, args.calls)
    rows = {}
    for name, ts in times.items():
        ts.sort()
        rows[name] = {"median_ms": statistics.median(ts) * 1e3, "p10_ms": ts[len(ts) // 10] * 1e3, "p90_ms": ts[len(ts) * 9 // 10] * 1e3}
        print(f"{args.model} {name:15s} median {rows[name]['median_ms']:.2f} ms (p10-p90 {rows[name]['p10_ms']:.2f}-{rows[name]['p90_ms']:.2f})")
    if args.json:
        doc = {
            "model": args.model,
            "log": args.log,
            "serving_paths": rows,
            "rounds": args.rounds,
            "calls": args.calls,
            "threads": torch.get_num_threads(),
            "host": host_fingerprint(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": "python " + " ".join(sys.argv),
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
