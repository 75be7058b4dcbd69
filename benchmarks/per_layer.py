"""Where the time goes, per layer: tunebench's served kernels beside a peer's nodes (ONNX Runtime or OpenVINO), same model, same host.

    .venv/bin/python benchmarks/per_layer.py resnet18 --log tuning_logs/resnet18-avx2.jsonl.gz [--runs 30] [--peer openvino]

TVM side: the model saved with the log's records (``tunebench.save``, what a deployment serves) and
loaded on TVM's VM; ``VirtualMachine.set_instrument`` times every packed call (kernels and VM
builtins). Peer side: the model's ONNX export (``tunebench.bench.peers``), run with the bench's
settings; ONNX Runtime with ``SessionOptions.enable_profiling`` (its ``*_kernel_time`` node
events), OpenVINO with ``PERF_COUNT`` (each request's ``get_profiling_info``, the node shapes from
the compiled model's runtime graph). Both with the same threads, ``--runs`` calls after warm-up,
medians, each side in a process of its own: the artifact is saved in one, loaded and timed in
another, the peer timed in a third. In one process, what ran before disturbed what followed: the
save's compile and race left ResNet18's whole call at 34 ms against 18 when loaded alone, and the
runtimes' thread pools spin after they run (the bench's ``--alone`` reason).

Convs are matched across the two by their work: output elements and FLOP (2 x MAC, from the kernel's
own argument shapes: weight elements / output channels MACs per output element), in call order;
layout transforms (TVM's ``layout_transform`` kernels, the peers' ``Reorder`` nodes) and the
rest are summed. Each side's kernel sum is shown against its whole call, timed separately without
the instrument or profiler. Writes ``benchmarks/results/per-layer/<model>-<llvm cpu>[-openvino][-tag].{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results" / "per-layer"
BUILTIN = "vm.builtin."
WARMUP = 3  # calls before the timed ones, on every side
PEERS = {"onnxruntime": ("ONNX Runtime", "ORT"), "openvino": ("OpenVINO", "OV")}  # --peer: (name, table label)


@dataclass
class Kernel:
    """One kernel call position of a model's forward: its name, the conv work it does, its times."""

    name: str
    kind: str  # conv | layout | other | vm
    out_numel: int = 0
    flop: float = 0.0
    times: list[float] = field(default_factory=list)
    args: list[tuple[tuple[int, ...], str]] = field(default_factory=list)  # TVM's: shape and dtype of each array argument

    @property
    def ms(self) -> float:
        return statistics.median(self.times) * 1e3

    def gflops(self) -> float | None:
        return self.flop / (self.ms / 1e3) / 1e9 if self.flop else None


def conv_work(data_out: tuple[int, ...], weight: tuple[int, ...], blocked_out: bool) -> tuple[int, float]:
    """(output elements, FLOP) of a conv from its output and weight shapes, NCHW or NCHW[b]c alike."""
    out_numel = _numel(data_out)
    channels = data_out[1] * data_out[4] if blocked_out and len(data_out) == 5 else data_out[1]
    return out_numel, 2.0 * out_numel * _numel(weight) / channels


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def saved(model_name: str, log: str, folder: Path, threads: int) -> str:
    """Save ``model_name`` served with ``log``'s records to ``folder`` in a child process on ``threads``
    threads (its races time the implementations with them); its coverage line.

    Compiling (and racing implementations) in the process that times the kernels slowed them."""
    return _child(["--side", "save", "--log", log, "--folder", str(folder), "--threads", str(threads)], model_name)["coverage"]


def tvm_kernels(folder: Path, inputs: tuple[Any, ...], runs: int) -> tuple[list[Kernel], list[float]]:
    """Per call position of the saved model's forward on TVM's VM: its kernel; and whole-call times."""
    import tunebench

    deployed = tunebench.load(folder)
    whole = _timed(lambda: deployed(*inputs), runs)
    vm = deployed._graph.sub._vm  # the artifact's VM: the same kernels tunebench.load serves
    kernels: list[Kernel] = []
    state = {"i": 0, "t0": 0.0}

    def instrument(func: Any, name: str, before: bool, ret: Any, *args: Any) -> int:
        if before:
            state["t0"] = time.perf_counter()
            return 0
        elapsed = time.perf_counter() - state["t0"]
        i = state["i"]
        if i == len(kernels):
            kernels.append(_classify_tvm(str(name), args))
        kernels[i].times.append(elapsed)
        state["i"] = i + 1
        return 0

    vm.set_instrument(instrument)
    for _ in range(runs + WARMUP):
        state["i"] = 0
        deployed(*inputs)
    vm.set_instrument(None)
    return _after_warmup(kernels), whole


def _classify_tvm(name: str, args: tuple[Any, ...]) -> Kernel:
    if name.startswith(BUILTIN) or "." in name:
        return Kernel(name, "vm")
    arrays = [(tuple(int(d) for d in a.shape), str(a.dtype)) for a in args if hasattr(a, "shape")]
    if "layout_transform" in name and "conv" not in name:
        return Kernel(name, "layout", args=arrays)
    if "conv2d" in name:
        out_numel, flop = conv_work(arrays[-1][0], arrays[1][0], blocked_out="NCHWc" in name)
        return Kernel(name, "conv", out_numel, flop, args=arrays)
    return Kernel(name, "other", args=arrays)


def ort_kernels(model: Any, inputs: tuple[Any, ...], threads: int, runs: int) -> tuple[list[Kernel], list[float]]:
    """Per node of ONNX Runtime's optimized graph, in run order: its kernel time; and whole-call times."""
    from tunebench.bench import peers

    workdir = Path(tempfile.mkdtemp(prefix="per-layer-ort-"))
    path = peers.export_onnx(model, inputs, workdir / "model.onnx")
    whole = _timed(peers.runner(peers.ORT, path, inputs, threads), runs)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling, opts.profile_file_prefix = True, str(workdir / "profile")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
    for _ in range(runs + WARMUP):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, Kernel] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"].removesuffix("_kernel_time")
        if name not in nodes:
            nodes[name] = _classify_ort(name, e["args"])
        nodes[name].times.append(e["dur"] / 1e6)
    return _after_warmup(list(nodes.values())), whole


def ov_kernels(model: Any, inputs: tuple[Any, ...], threads: int, runs: int) -> tuple[list[Kernel], list[float]]:
    """Per executed node of OpenVINO's compiled graph, in run order: its time (``PERF_COUNT``); and whole-call times."""
    import openvino as ov

    from tunebench.bench import peers

    path = peers.export_onnx(model, inputs, Path(tempfile.mkdtemp(prefix="per-layer-ov-")) / "model.onnx")
    whole = _timed(peers.runner(peers.OPENVINO, path, inputs, threads), runs)
    compiled = ov.Core().compile_model(str(path), "CPU", {**peers.openvino_config(threads), "PERF_COUNT": "YES"})
    shapes = {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ordered_ops()}
    request, arrays = compiled.create_infer_request(), [x.numpy() for x in inputs]
    nodes: dict[str, Kernel] = {}
    for _ in range(runs + WARMUP):
        request.infer(arrays)
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                if info.node_name not in nodes:
                    nodes[info.node_name] = _classify_ov(info, shapes.get(info.node_name))
                nodes[info.node_name].times.append(info.real_time.total_seconds())
    return _after_warmup(list(nodes.values())), whole


def _classify_ov(info: Any, op: Any) -> Kernel:
    label = f"{info.node_name} ({info.node_type}, {info.exec_type})"
    if info.node_type in ("Convolution", "GroupConvolution") and op is not None:
        out = tuple(op.get_output_partial_shape(0).to_shape())
        out_numel, flop = conv_work(out, tuple(op.input(1).get_partial_shape().to_shape()), blocked_out=False)
        return Kernel(label, "conv", out_numel, flop)
    return Kernel(label, "layout" if info.node_type == "Reorder" else "other")


def _classify_ort(name: str, args: dict[str, Any]) -> Kernel:
    op = args.get("op_name", "")
    if op in ("Conv", "FusedConv"):
        shapes = [tuple(next(iter(s.values()))) for s in args.get("input_type_shape", [])]
        out = tuple(next(iter(args["output_type_shape"][0].values())))
        out_numel, flop = conv_work(out, shapes[1], blocked_out=args.get("op_name") == "Conv" and len(out) == 5)
        return Kernel(f"{name} ({op})", "conv", out_numel, flop)
    if op.startswith("Reorder"):
        return Kernel(f"{name} ({op})", "layout")
    return Kernel(f"{name} ({op})", "other")


def _after_warmup(kernels: list[Kernel]) -> list[Kernel]:
    """``kernels`` with each one's first ``WARMUP`` samples dropped (all kept where it ran no more often)."""
    for k in kernels:
        k.times = k.times[WARMUP:] or k.times
    return kernels


def _timed(fn: Any, runs: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def match_convs(tvm: list[Kernel], ort: list[Kernel]) -> list[tuple[Kernel, Kernel | None]]:
    """Each TVM conv with the peer's conv of the same work (output elements, FLOP within 2%:
    padded channel blocks), taken in call order among equals."""
    pool: dict[int, list[Kernel]] = defaultdict(list)
    for k in ort:
        if k.kind == "conv":
            pool[k.out_numel].append(k)
    pairs = []
    for k in (k for k in tvm if k.kind == "conv"):
        same = [o for o in pool[k.out_numel] if abs(o.flop - k.flop) <= 0.02 * k.flop]
        if same:
            pool[k.out_numel].remove(same[0])
        pairs.append((k, same[0] if same else None))
    return pairs


def table(peer: str, tvm: list[Kernel], tvm_whole: list[float], ort: list[Kernel], ort_whole: list[float]) -> list[str]:
    """The per-layer table as Markdown lines, TVM beside ``peer`` (``PEERS``' key)."""
    name, short = PEERS[peer]
    rows = [f"| # | TVM kernel | out elems | MFLOP | TVM ms | TVM GFLOP/s | {name} node | {short} ms | {short} GFLOP/s | TVM/{short} time |", "|" + "---|" * 10]
    for i, (k, o) in enumerate(match_convs(tvm, ort)):
        ours = f"{k.ms:.3f} | {k.gflops():.0f}"
        theirs = f"{o.name} | {o.ms:.3f} | {o.gflops():.0f} | {k.ms / o.ms:.2f}" if o else "(no match) | | |"
        rows.append(f"| {i} | {k.name} | {k.out_numel} | {k.flop / 1e6:.1f} | {ours} | {theirs} |")
    for kind, label in (("conv", "all convs"), ("layout", "layout transforms"), ("other", "other kernels"), ("vm", "VM builtins (alloc, ...)")):
        a, b = sum(k.ms for k in tvm if k.kind == kind), sum(k.ms for k in ort if k.kind == kind)
        names = ", ".join(sorted({k.name.split(" (")[-1].rstrip(")") for k in ort if k.kind == kind})) if kind == "other" else ""
        counts = f"{sum(k.kind == kind for k in tvm)} TVM / {sum(k.kind == kind for k in ort)} {short}"
        ratio = f"{a / b:.2f}" if b else ""
        rows.append(f"| | **{label}** ({counts}) | | | {a:.3f} | | {names} | {b:.3f} | | {ratio} |")
    st, so = sum(k.ms for k in tvm), sum(k.ms for k in ort)
    wt, wo = statistics.median(tvm_whole) * 1e3, statistics.median(ort_whole) * 1e3
    rows.append(f"| | **sum of kernels** | | | {st:.3f} | | | {so:.3f} | | {st / so:.2f} |")
    rows.append(f"| | **whole call** (median, p90 {_p90(tvm_whole):.3f} / {_p90(ort_whole):.3f}) | | | {wt:.3f} | | | {wo:.3f} | | {wt / wo:.2f} |")
    return rows


def _p90(times: list[float]) -> float:
    return sorted(times)[int(0.9 * (len(times) - 1))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--log", required=True)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tag", default="", help="suffix of the output files (e.g. before, after)")
    parser.add_argument("--peer", choices=sorted(PEERS), default="onnxruntime", help="the runtime beside tunebench's kernels")
    parser.add_argument("--results", type=Path, default=OUT, help="folder of the .md and .json written")
    parser.add_argument("--side", choices=["save", "tvm", *PEERS], help=argparse.SUPPRESS)  # a child's one job (see _child)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        args.out.write_text(json.dumps(_side(args)))
        return
    from tunebench.target import host_fingerprint, physical_cores

    threads = args.threads or physical_cores()
    common = ["--threads", str(threads), "--runs", str(args.runs)]
    with tempfile.TemporaryDirectory(prefix="per-layer-") as tmp:
        folder = Path(tmp) / "saved"
        coverage = saved(args.model, args.log, folder, threads)
        tvm_side = _child(["--side", "tvm", "--log", args.log, "--folder", str(folder), *common], args.model)
        peer_side = _child(["--side", args.peer, "--log", args.log, *common], args.model)
    tvm, peer = ([Kernel(**k) for k in side["kernels"]] for side in (tvm_side, peer_side))
    tvm_whole, peer_whole = tvm_side["whole"], peer_side["whole"]
    host = host_fingerprint()
    command = "python benchmarks/per_layer.py " + shlex.join(sys.argv[1:])
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    head = [
        f"# {args.model}: tunebench kernels vs {PEERS[args.peer][0]} nodes, per layer",
        "",
        f"Host: {host['cpu']} (LLVM `{host['llvm_cpu']}`), {threads} threads; {date}; `{command}`; tunebench: {coverage}; each side in its own process.",
        "",
    ]
    lines = head + table(args.peer, tvm, tvm_whole, peer, peer_whole)
    print("\n".join(lines))
    stem = "-".join([args.model.rsplit(":", 1)[-1], host["llvm_cpu"], *(["openvino"] if args.peer == "openvino" else []), *([args.tag] if args.tag else [])])
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    doc = {
        "model": args.model,
        "log": args.log,
        "host": host,
        "threads": threads,
        "date": date,
        "command": command,
        "coverage": coverage,
        "peer": args.peer,
        "processes": {"tvm": tvm_side["pid"], args.peer: peer_side["pid"]},
        "tvm_whole_s": tvm_whole,
        f"{PEERS[args.peer][1].lower()}_whole_s": peer_whole,
        "tvm": [{"name": k.name, "kind": k.kind, "flop": k.flop, "median_ms": k.ms} for k in tvm],
        args.peer: [{"name": k.name, "kind": k.kind, "flop": k.flop, "median_ms": k.ms} for k in peer],
    }
    (args.results / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.results / stem}.md and .json")


def _child(argv: list[str], model_name: str) -> dict[str, Any]:
    """Run this script on one ``--side`` in a fresh process; what that side wrote."""
    with tempfile.TemporaryDirectory(prefix="per-layer-side-") as tmp:
        out = Path(tmp) / "side.json"
        subprocess.run([sys.executable, __file__, model_name, *argv, "--out", str(out)], check=True)
        return json.loads(out.read_text())


def _side(args: argparse.Namespace) -> dict[str, Any]:
    """One side's work in this (child) process: save the artifact, or time TVM's kernels or a peer's nodes."""
    from tunebench.bench.bench import set_threads
    from tunebench.target import physical_cores
    from tunebench.zoo import get_model

    set_threads(args.threads or physical_cores())  # torch imported after tunebench, which bounds libgomp's spinning (tunebench.serve.spin)
    import torch

    import tunebench

    model, inputs = get_model(args.model)
    with torch.no_grad():
        if args.side == "save":
            with tunebench.apply_history_best(args.log):
                return {"coverage": tunebench.save(model, inputs, args.folder).coverage}
        if args.side == "tvm":
            kernels, whole = tvm_kernels(args.folder, inputs, args.runs)
        else:
            kernels, whole = (ort_kernels if args.side == "onnxruntime" else ov_kernels)(model, inputs, args.threads, args.runs)
    return {"kernels": [asdict(k) for k in kernels], "whole": whole, "pid": os.getpid()}


if __name__ == "__main__":
    main()
