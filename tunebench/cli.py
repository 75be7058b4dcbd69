"""The ``tunebench`` command: a thin typer skin over the Python API.

Errors a user can fix (bad model, target, log, a mistyped option) print one line and exit 2, before
any work starts; anything else is a bug and keeps its traceback. Text from users and logs reaches
rich escaped (``rich.markup.escape``) or with markup off: ``[avx512]`` is text, not a style tag.
"""

from __future__ import annotations

import shlex
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import TunebenchError

app = typer.Typer(help="Tune PyTorch models for x86 CPUs with Apache TVM (Relax + MetaSchedule).", no_args_is_help=True, add_completion=False)
console = Console()
err_console = Console(stderr=True)

TargetOpt = Annotated[
    str, typer.Option("--target", "-t", help="host (the widest ISA this CPU runs: avx512 if it has it, else avx2), avx2, avx512, native, or a JSON target dict")
]
LogTargetOpt = Annotated[
    Optional[str], typer.Option("--target", "-t", help="avx2, avx512, native, or a JSON TVM target dict (default: the one LOG was tuned for, else avx2)")
]
WinogradOpt = Annotated[bool, typer.Option("--winograd", help="also the Winograd implementation of each 3x3 stride-1 conv, to compete with the direct one")]
LayoutOpt = Annotated[str, typer.Option(help="conv layout: blocked (NCHW[x]c, vector-width channel blocks), taps (blocked, convs skip padding) or nchw")]
FoldOpt = Annotated[
    bool, typer.Option("--fold-bn", help="batch norms folded into the convs before them (serving folds when the log says the folded tasks are faster)")
]
CoresOpt = Annotated[Optional[int], typer.Option("--num-cores", help="threads per kernel (default: physical cores)")]


@app.command()
def models() -> None:
    """List the model zoo: parameters, example input shape and GFLOP per inference."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .zoo import zoo

    table = Table(title="tunebench model zoo")
    for col in ("model", "params (M)", "input", "GFLOP", "description"):
        table.add_column(col, justify="left" if col in ("model", "input", "description") else "right")
    for name, entry in zoo().items():
        model, inputs = entry.factory(), entry.example_inputs()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(*inputs)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        shape = "x".join(map(str, entry.input_shape)) + ("" if entry.input_dtype.is_floating_point else " ids")
        table.add_row(name, f"{params:.2f}", shape, f"{counter.get_total_flops() / 1e9:.3f}", entry.description)
    console.print(table)


BatchOpt = Annotated[
    Optional[str], typer.Option(help="batch sizes to lower the model at, comma-separated (1,8): one log tuned for each, by its share")
]


ServedOpt = Annotated[
    bool, typer.Option("--as-served", help="lower the graph torch.compile captures (the tasks the backend serves) even if the model exports whole")
]


def _batches(text: str | None) -> list[int] | None:
    """``--batch 1,8`` as a list of batch sizes."""
    if text is None:
        return None
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise TunebenchError(f"--batch takes comma-separated batch sizes such as 1,8, got {text!r}") from None


@app.command()
def tasks(
    model: str,
    target: TargetOpt = "host",
    num_cores: CoresOpt = None,
    winograd: WinogradOpt = False,
    layout: LayoutOpt = "blocked",
    fold_bn: FoldOpt = False,
    batch: BatchOpt = None,
    as_served: ServedOpt = False,
) -> None:
    """Lower MODEL (zoo name or path/to/file.py:factory) and list its tuning tasks, and the ops that stay in PyTorch."""
    from .api import lower_model

    lowered = lower_model(model, target, num_cores=num_cores, winograd=winograd, layout=layout, batch=_batches(batch), served=as_served, fold_bn=fold_bn)
    at = f", batch {batch}" if batch else ""
    spec = lowered.target
    table = Table(title=f"{escape(model)}{at}: {len(lowered.tasks)} tuning tasks for {spec.name} ({spec.mcpu}, {spec.num_cores} cores)")
    for col in ("#", "task", "anchor op", "conv (impl)", "MFLOP", "x", "MFLOP total"):
        table.add_column(col, justify="left" if col in ("task", "anchor op", "conv (impl)") else "right")
    for i, t in enumerate(lowered.tasks):
        conv = f"{t.conv} ({t.impl})" if t.conv is not None else ""
        table.add_row(str(i), t.name, t.anchor, conv, f"{t.flop / 1e6:.1f}", str(t.weight), f"{t.total_flop / 1e6:.1f}")
    served = [t for t in lowered.tasks if t.impl != "winograd"]  # what one inference runs with direct convs
    table.add_section()
    table.add_row("", "total (direct convs)", "", "", "", str(sum(t.weight for t in served)), f"{sum(t.total_flop for t in served) / 1e6:.1f}")
    console.print(table)
    if lowered.pytorch_ops:
        partitions = len({part.name for part in lowered.lowerings})
        console.print(f"{partitions} TVM partitions; these ops stay in PyTorch (torch.compile serves them there):")
        for op in lowered.pytorch_ops:
            console.print(f"  {op}", soft_wrap=True, markup=False, highlight=False)


@app.command()
def tune(
    model: str,
    target: TargetOpt = "host",
    trials: Annotated[Optional[int], typer.Option(help="trial budget for the whole model, counting the log")] = None,
    trials_per_task: Annotated[Optional[int], typer.Option(help="trial cap per task, counting the log")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="wall-clock limit for this run, seconds; alone, a time budget (tune until it is up)")] = None,
    more: Annotated[Optional[int], typer.Option(help="trials for this run, on top of what the log holds")] = None,
    tuner: Annotated[str, typer.Option(help="xgb (evolutionary search + XGBoost cost model) or random")] = "xgb",
    log: Annotated[Optional[Path], typer.Option(help="history log (default tuning_logs/<model>-<target>.jsonl.gz)")] = None,
    num_cores: CoresOpt = None,
    rpc: Annotated[Optional[str], typer.Option(help="measure on an RPC tracker's servers, HOST:PORT")] = None,
    rpc_key: Annotated[Optional[str], typer.Option(help="device key the RPC servers registered under")] = None,
    rpc_allow_public: Annotated[
        bool, typer.Option("--rpc-allow-public", help="allow a tracker outside loopback and private networks (it picks who runs your candidates)")
    ] = False,
    winograd: WinogradOpt = False,
    layout: LayoutOpt = "blocked",
    fold_bn: FoldOpt = False,
    batch: BatchOpt = None,
    as_served: ServedOpt = False,
    protocol: Annotated[
        str, typer.Option(help="timing: cold (caches flushed of all but the input before each call, as inside a model) or warm (repeated calls)")
    ] = "cold",
    transfer_from: Annotated[
        Optional[list[Path]], typer.Option("--from", help="log(s) whose best schedules per task are timed here first (another machine's or model's)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live view; one line per batch")] = False,
) -> None:
    """Search schedules for every task of MODEL; resumable, every batch appended to the log."""
    from . import api
    from .search.progress import LineReporter, LiveReporter, summary
    from .search.settings import MeasureConfig
    from .target import host_preset, resolve_target

    if (rpc is None) != (rpc_key is None):
        raise TunebenchError("--rpc and --rpc-key go together")
    if rpc is not None:
        from .search.rpc import check_tracker

        check_tracker(rpc, rpc_allow_public)  # before the model is lowered: a refused address costs nothing
    spec = resolve_target(target, num_cores)
    log_path = log or api.default_log_path(model, spec)
    why = f": {host_preset()[1]}" if target == "host" else " (--target)"
    view = LineReporter(err_console) if quiet or not console.is_terminal else LiveReporter(console)

    def reporter(event: str, state: Any) -> None:  # what is tuned, and why, once every argument has passed its checks
        if event == "start":
            err_console.print(f"tuning {model} for {spec.name} ({spec.mcpu}, {spec.num_cores} threads){why}; log {log_path}", markup=False, highlight=False)
        view(event, state)
    state = api.tune(
        model,
        spec,
        log=log_path,
        trials=trials,
        trials_per_task=trials_per_task,
        timeout=timeout,
        more=more,
        tuner=tuner,
        winograd=winograd,
        layout=layout,
        fold_bn=fold_bn,
        batch=_batches(batch),
        served=as_served,
        measure=MeasureConfig(workers=spec.num_cores, protocol=protocol, rpc=rpc, rpc_key=rpc_key, rpc_allow_public=rpc_allow_public),
        transfer_from=transfer_from,
        reporter=reporter,
    )
    summary(state, console, str(log_path), "tunebench " + shlex.join(sys.argv[1:]))
    if state.interrupted:
        raise typer.Exit(130)


@app.command()
def siblings(
    model: str,
    target: TargetOpt = "host",
    log: Annotated[Optional[Path], typer.Option(help="history log (default tuning_logs/<model>-<target>.jsonl.gz)")] = None,
    num_cores: CoresOpt = None,
    layout: LayoutOpt = "blocked",
    fold_bn: FoldOpt = False,
    rounds: Annotated[int, typer.Option(min=1, help="alternated rounds of 5 cold calls per schedule")] = 10,
) -> None:
    """Time the best schedules of MODEL's tasks that share a conv against each other, side by side, and
    log each task's winner (it outranks the lone timings before it)."""
    from . import api

    def report(v: Any) -> None:
        cells = ", ".join(f"{'*' if i == v.winner else ''}{who} {secs * 1e3:.3f}" for i, (who, secs) in enumerate(v.candidates))
        console.print(f"{v.task}: {cells} ms ({v.gain:.2f}x)", markup=False, highlight=False, soft_wrap=True)

    verdicts = api.compare_siblings(model, target, log=log, layout=layout, fold_bn=fold_bn, num_cores=num_cores, rounds=rounds, reporter=report)
    moved = [v for v in verdicts if v.winner]
    console.print(f"{len(verdicts)} task(s) compared; {len(moved)} now served by a sibling's schedule", markup=False)


@app.command()
def refine(
    model: str,
    target: TargetOpt = "host",
    log: Annotated[Optional[Path], typer.Option(help="history log (default tuning_logs/<model>-<target>.jsonl.gz)")] = None,
    num_cores: CoresOpt = None,
    layout: LayoutOpt = "blocked",
    fold_bn: FoldOpt = False,
    sweeps: Annotated[int, typer.Option(min=1, help="sweeps per task at most (each may move its lead schedule one decision)")] = 3,
    timeout: Annotated[Optional[float], typer.Option(help="stop between tasks after this many seconds")] = None,
) -> None:
    """Race each task's best schedule against its neighbours (one sampling decision away), side by side,
    largest latency share first, and log each task's winner (it outranks the lone timings before it)."""
    from . import api

    def report(v: Any) -> None:
        best, won = v.candidates[0][1], v.candidates[v.winner]
        moved = f"{won[0]}: {best * 1e3:.3f} -> {won[1] * 1e3:.3f} ms ({best / won[1]:.2f}x)" if v.winner else f"log's best held, {best * 1e3:.3f} ms"
        console.print(f"{v.task}: {moved}, {len(v.candidates)} raced", markup=False, highlight=False, soft_wrap=True)

    verdicts = api.refine(model, target, log=log, layout=layout, fold_bn=fold_bn, num_cores=num_cores, sweeps=sweeps, timeout=timeout, reporter=report)
    moved = [v for v in verdicts if v.winner]
    console.print(f"{len(verdicts)} task(s) raced; {len(moved)} now served by a refined schedule", markup=False)


@app.command()
def bench(
    model: str,
    log: Annotated[Optional[Path], typer.Option(help="history log whose best records the tuned column uses")] = None,
    target: LogTargetOpt = None,
    batch: Annotated[Optional[int], typer.Option(help="batch dimension of the example input")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch and TVM threads (default: physical cores)")] = None,
    iters: Annotated[int, typer.Option(help="timed rounds, one sample per column each (A B C A B C ...)")] = 30,
    warmup: Annotated[int, typer.Option(help="untimed calls per column before timing")] = 3,
    settle: Annotated[int, typer.Option(help="untimed calls of a column right before each of its samples (0: strict A B C alternation)")] = 0,
    winograd: Annotated[bool, typer.Option("--winograd", help="serve Winograd for conv shapes whose Winograd records beat the direct ones")] = False,
    untuned: Annotated[Optional[bool], typer.Option("--untuned/--no-untuned", help="untuned TVM column (default: only without --log, under 0.5 GFLOP)")] = None,
    whole_model: Annotated[
        bool, typer.Option("--whole-model", help="also time the whole-model build (build.compile_model, no dynamo) with LOG's records")
    ] = False,
    saved: Annotated[bool, typer.Option("--saved", help="also time LOG's build saved and loaded back (tunebench.save/load: no dynamo)")] = False,
    torch_isa: Annotated[Optional[str], typer.Option(help="cap PyTorch's instruction set (avx2, avx512): a same-ISA comparison")] = None,
    peers: Annotated[bool, typer.Option("--peers", help="also time ONNX Runtime and OpenVINO (fp32) on the model's ONNX export")] = False,
    peer_spin: Annotated[
        bool, typer.Option("--peer-spin/--no-peer-spin", help="let ONNX Runtime's threads spin between calls (its default)")
    ] = True,
    only: Annotated[Optional[str], typer.Option(help="time only these columns, comma-separated (e.g. eager,onnxruntime)")] = None,
    alone: Annotated[
        int, typer.Option(help="time each column alone in its own process, this many rounds alternated (0: all in this process, interleaved)")
    ] = 0,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="also write the result as JSON here")] = None,
) -> None:
    """Time MODEL in PyTorch eager, inductor and tunebench, interleaved; tunebench as users run it:
    torch.compile(model, backend="tunebench") inside apply_history_best(LOG)."""
    from .bench.bench import run_alone, run_bench, table, write_json
    from .preflight import writable

    if json_path:
        writable(json_path, "--json")
    result = (run_alone if alone else run_bench)(
        model,
        log=log,
        batch=batch,
        threads=threads,
        target=target,
        iters=iters,
        warmup=warmup,
        settle=settle,
        winograd=winograd,
        untuned=untuned,
        whole_model=whole_model,
        saved=saved,
        torch_isa=torch_isa,
        peers=peers,
        peer_spin=peer_spin,
        only=only.split(",") if only else None,
        command="tunebench " + shlex.join(sys.argv[1:]),
        **({"rounds": alone} if alone else {}),
    )
    out = console if console.is_terminal else Console(width=160)  # piped (make, logs): keep each row on one line
    out.print(table(result))
    if json_path:
        write_json(result, json_path)
        console.print(f"wrote {json_path}", markup=False, highlight=False)


@app.command()
def plot(
    log: Path,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write")] = Path("curve.png"),
    eager_ms: Annotated[Optional[float], typer.Option(help="PyTorch eager latency to draw, ms")] = None,
    bench_json: Annotated[Optional[Path], typer.Option(help="take the eager latency from a tunebench bench --json file")] = None,
    model: Annotated[Optional[str], typer.Option(help="count the model's tasks, not just those the log has met")] = None,
    target: LogTargetOpt = None,
    layout: Annotated[str, typer.Option(help="with --model: the conv layout whose tasks count (blocked, taps or nchw)")] = "blocked",
) -> None:
    """Plot LOG's tuning curve: estimated model latency against trials and wall time."""
    from .bench.plot import plot_log

    curve = plot_log(log, out, eager_ms=eager_ms, bench_json=bench_json, model=model, target=target, layout=layout)
    _, complete = curve.split()
    if curve.latency_s[complete]:
        est = f"estimate {curve.latency_s[complete][0] * 1e3:.2f} ms at trial {curve.first_complete}, {curve.latency_s[-1] * 1e3:.2f} ms now"
    else:
        est = f"no complete estimate yet: {curve.measured[-1]}/{curve.workloads} workloads measured (partial sum drawn dashed)"
    console.print(f"{out}: {curve.workloads} workloads, {curve.total_trials} trials; {est}", markup=False, highlight=False)


logs_app = typer.Typer(help="Show, merge and prune history logs: share tuning results across machines.", no_args_is_help=True)
app.add_typer(logs_app, name="logs")
LogsArg = Annotated[list[Path], typer.Argument(help="history logs (a directory means its *.jsonl files)")]


@logs_app.command("show")
def logs_show(
    logs: LogsArg,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="also total this model's tasks (lowers it: seconds)")] = None,
) -> None:
    """Per workload: best latency, GFLOP/s, trials, target and machine; per model: estimated latency."""
    from .api import log_summary
    from .logs.records import log_files
    from .logs.share import print_summary

    for path in log_files(logs):
        print_summary(log_summary(path, model), console)


@logs_app.command("merge")
def logs_merge(
    logs: LogsArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="merged log to write (atomically)")],
    top: Annotated[Optional[int], typer.Option(help="keep the K fastest successful records per (workload, target)")] = None,
) -> None:
    """Union of logs from any machines, duplicates removed; same inputs, same bytes."""
    from .logs.share import merge_logs, print_merge

    print_merge(merge_logs(list(logs), out, top), out, console)


@logs_app.command("prune")
def logs_prune(
    log: Annotated[Path, typer.Argument(help="history log to prune in place")],
    top: Annotated[int, typer.Option(help="keep the K fastest successful records per (workload, target)")],
) -> None:
    """Keep the best K records per (workload, target), replacing LOG atomically (a crash leaves it whole)."""
    from .logs.share import print_merge, prune_log

    print_merge(prune_log(log, top), log, console)


cache_app = typer.Typer(help='Show and clear the compile cache of torch.compile(backend="tunebench").', no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CacheDirOpt = Annotated[Optional[Path], typer.Option("--dir", help="cache directory (default: $TUNEBENCH_CACHE_DIR, else ~/.cache/tunebench)")]


def _cache_dir(directory: Path | None) -> Path:
    """``--dir``, else the default cache directory; a file there is a mistake, not an empty cache."""
    from .serve.cache import default_cache_dir

    folder = directory or default_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise TunebenchError(f"cache directory {str(folder)!r} is a file, not a folder")
    return folder


@cache_app.command("show")
def cache_show(directory: CacheDirOpt = None) -> None:
    """Entries, most recently used first: runner, size, last use, lowering; their total against the limit."""
    import time

    from .serve.cache import MB, list_entries

    listing = list_entries(_cache_dir(directory))
    table = Table(title=f"tunebench compile cache: {len(listing.entries)} entries")
    for col in ("key", "runner", "MB", "last used", "lowering", "records"):
        table.add_column(col, justify="right" if col in ("MB", "records") else "left")
    for e in listing.entries:
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.last_used))
        table.add_row(e.key[:12], e.runner, f"{e.size / MB:.1f}", used, e.lowering, str(e.applied))
    console.print(table)
    total = f"total {listing.total / MB:.1f} MB of {listing.limit / MB:.0f} MB (TUNEBENCH_CACHE_MAX_MB)"
    console.print(f"{total} in {listing.directory}", soft_wrap=True, markup=False)


@cache_app.command("clear")
def cache_clear(directory: CacheDirOpt = None) -> None:
    """Delete every entry, temp and lock file; entries another process is loading or building stay."""
    from .serve.cache import MB, clear

    folder = _cache_dir(directory)
    try:
        freed = clear(folder)
    except OSError as e:
        raise TunebenchError(f"cannot clear the cache in {folder}: {e}") from e
    busy = f"; {freed.busy} in use by another process, kept" if freed.busy else ""
    console.print(f"freed {freed.bytes / MB:.1f} MB ({freed.entries} entries) in {folder}{busy}", soft_wrap=True, markup=False)


fleet_app = typer.Typer(
    help="Run a TVM RPC tracker or measuring server for tune --rpc, on 127.0.0.1 unless --host says otherwise (docs/fleet.md).", no_args_is_help=True
)
app.add_typer(fleet_app, name="fleet")
HostOpt = Annotated[str, typer.Option(help="address to listen on; anything but loopback lets other machines in (docs/fleet.md)")]


def _serve_until_interrupted(what: str, started: Any) -> None:
    """Wait on a started tracker or server (it runs in a process of its own) until Ctrl-C or its end."""
    console.print(what, soft_wrap=True, markup=False, highlight=False)
    try:
        started.proc.join()
    except KeyboardInterrupt:
        started.terminate()


@fleet_app.command("tracker")
def fleet_tracker(host: HostOpt = "127.0.0.1", port: Annotated[int, typer.Option(help="port to listen on (exactly this one)")] = 9190) -> None:
    """Run a TVM RPC tracker: servers register with it under a key, tune --rpc asks it for them."""
    from .search.fleet import start_tracker

    _serve_until_interrupted(f"RPC tracker listening on {host}:{port}", start_tracker(host, port))


@fleet_app.command("server")
def fleet_server(
    tracker: Annotated[str, typer.Option(help="HOST:PORT of the tracker to register with")],
    key: Annotated[str, typer.Option(help="device key to register under: a label for matching, not a password")],
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (exactly this one; the tracker hands it to clients)")] = 9090,
    threads: Annotated[Optional[int], typer.Option(help="TVM threads per candidate, TVM_NUM_THREADS (default: physical cores)")] = None,
    custom_addr: Annotated[Optional[str], typer.Option(help="address the tracker gives clients (default: the one it sees this server from)")] = None,
) -> None:
    """Run a TVM RPC server that times candidates: it runs whatever module a client sends it."""
    import os

    from .search.fleet import start_server

    server = start_server(tracker, key, host, port, threads, custom_addr)
    where = f"RPC server listening on {host}:{port}, key {key}, tracker {tracker}, TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']}"
    _serve_until_interrupted(where, server)


@app.command("apply")
def apply_cmd(
    model: str,
    log: Annotated[Path, typer.Option(help="history log, or a directory of logs, whose best records are applied")],
    target: LogTargetOpt = None,
    fallback: Annotated[str, typer.Option(help="untuned: subgraphs with untuned tasks run in PyTorch; never: all in TVM")] = "untuned",
    runs: Annotated[int, typer.Option(help="timed rounds, one sample of eager and one of tunebench each (strict alternation)")] = 20,
) -> None:
    """Serve MODEL with LOG's best records (torch.compile inside apply_history_best), check it against
    PyTorch eager and time both: bench's eager and tuned columns, strict alternation."""
    from .bench.bench import apply_model

    r = apply_model(model, log, target, fallback, runs)
    console.print(f"{model}: {r.coverage}; {r.applied} record(s) applied; max abs error vs eager {r.max_abs_error:.2g}", markup=False, highlight=False)
    console.print(f"median latency over {r.rounds} rounds, {r.protocol}: tunebench {r.tvm_ms:.2f} ms, eager {r.eager_ms:.2f} ms ({r.eager_ms / r.tvm_ms:.2f}x)")


@app.command("save")
def save_cmd(
    model: str,
    path: Annotated[Path, typer.Argument(help="folder to write the artifact to (replaced if it holds one)")],
    log: Annotated[Path, typer.Option(help="history log, or a directory of logs, whose best records are applied")],
    target: LogTargetOpt = None,
    batch: Annotated[Optional[int], typer.Option(help="batch dimension of the example input")] = None,
    fallback: Annotated[str, typer.Option(help="untuned: refuse a model with untuned tasks (they would run in PyTorch); never: build them anyway")] = "untuned",
) -> None:
    """Compile MODEL with LOG's best records and save it as a folder that tunebench.load serves
    with TVM's runtime alone: no dynamo, no TVM compiler, a fast start for a server."""
    from .logs.records import log_files
    from .serve.context import check_fallback
    from .serve.deploy import check_destination, save
    from .zoo import get_model, with_batch

    check_fallback(fallback)
    log_files(log)  # it exists
    check_destination(path)
    net, inputs = get_model(model)
    manifest = save(net, with_batch(inputs, batch), path, logs=str(log), target=target, fallback=fallback)
    shapes = ", ".join("x".join(map(str, shape)) + f" {dtype}" for shape, dtype in manifest.inputs)
    console.print(f"{model} ({shapes}): {manifest.coverage}; saved to {path} for {manifest.target.get('mcpu')}", soft_wrap=True, markup=False)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None, line: str | None = None) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True, markup=True, highlight=False)


def _fail(message: str) -> None:
    err_console.print(f"error: {message}", soft_wrap=True, markup=False, highlight=False)
    sys.exit(2)


def main() -> None:
    """Console-script entry point: one-line errors for TunebenchError and for typer's usage errors
    (a mistyped option or value, a missing argument), tracebacks for bugs."""
    warnings.showwarning = _show_warning  # type: ignore[assignment]
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        code = app(standalone_mode=False)  # typer's errors come here instead of as a boxed panel
    except TunebenchError as e:
        _fail(str(e))
    except typer.TyperException as e:  # click's UsageError and kin, as typer vendors them
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `tunebench logs`: typer printed the help
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        _fail(e.format_message() + (f" (see {ctx.command_path} --help)" if ctx is not None else ""))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
