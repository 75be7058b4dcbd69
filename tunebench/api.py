"""The Python API behind the CLI: model -> lowering -> tasks -> search -> records, as plain calls.

Everything the CLI prints comes from these functions, so a notebook gets the same results.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from .lowering.model import lower_model
from .target import TargetSpec, resolve_target

LOG_DIR = Path("tuning_logs")


def log_summary(path: str | Path, models: list[str] | None = None) -> Any:
    """``share.summarize`` of ``path`` (a ``share.LogSummary``), plus for each of ``models`` (zoo names or
    file.py:factory) its estimated latency per target in the log and per lowering the log holds
    workloads of. Lowering costs seconds, so it is opt-in (``logs show --model``)."""
    from .logs.share import log_targets, model_totals, summarize

    summary = summarize(path)
    for model in models or []:
        for config in log_targets(summary.log):
            summary.totals.extend(model_totals(model, summary.log, config, _log_lowerings(model, summary.log, config)))
    return summary


def _log_lowerings(model: str, log: Any, config: str) -> list[tuple[str, list[Any]]]:
    """``model``'s tasks per lowering ``log`` holds workloads of: NCHW direct convs, NCHW with
    Winograd tasks beside them, blocked layout, valid-tap convs, each layout with batch norms folded. The model is
    exported once; the other lowerings start from its imported module."""
    import json

    from .errors import TunebenchError
    from .lowering import batchnorm, layout, taps, winograd
    from .lowering.frontend import optimize
    from .lowering.tasks import extract_tasks

    spec = resolve_target(json.dumps(json.loads(config)), check=False)
    with_winograd = winograd.in_log(log)
    try:
        lowered = lower_model(model, spec, winograd=with_winograd, layout="nchw")
    except TunebenchError as e:  # e.g. a target this CPU cannot compile for
        raise TunebenchError(f"cannot match {model!r} against {config}: {e}") from None
    out = [("nchw", [t for t in lowered.tasks if t.impl != "winograd"])]
    if with_winograd:
        out.append(("nchw, winograd", lowered.tasks))
    held = ["blocked"] * layout.in_log(log) + ["taps"] * taps.in_log(log)
    out += [(lay, extract_tasks(optimize(lowered.source, spec, layout=lay), spec)) for lay in held]
    folded_layouts = batchnorm.in_log(log)
    folded = batchnorm.folded_or_none(lowered.source) if folded_layouts else None
    if folded is not None:
        out += [(f"{lay}, batch norms folded", extract_tasks(optimize(folded, spec, layout=lay), spec)) for lay in sorted(folded_layouts)]
    return out


def _log_path(log: str | Path | None, model: str | Any, target: TargetSpec) -> Path:
    """``log`` if given, else ``model``'s default log (a module by its class name)."""
    return Path(log) if log else default_log_path(model if isinstance(model, str) else type(model).__name__, target)


def default_log_path(model: str, target: TargetSpec) -> Path:
    """``tuning_logs/<model>-<target>.jsonl.gz`` (a file:factory reference uses its factory name), or
    the plain ``.jsonl`` where one exists: logs written before compression keep growing where they are.

    A JSON target's ``<target>`` is ``custom-`` and 8 hex digits of its identity (``target.identity``:
    the dict without ``num-cores``), so two custom targets keep two logs and one keeps one on any host."""
    stem = model.rsplit(":", 1)[-1] if ":" in model else model
    name = target.name
    if name == "custom":
        name += "-" + hashlib.sha256(target.identity.encode()).hexdigest()[:8]
    plain = LOG_DIR / f"{stem}-{name}.jsonl"
    return plain if plain.exists() else plain.with_name(plain.name + ".gz")


def tune(
    model: str | Any,
    target: str | TargetSpec = "host",
    *,
    log: str | Path | None = None,
    trials: int | None = None,
    trials_per_task: int | None = None,
    timeout: float | None = None,
    more: int | None = None,
    tuner: str = "xgb",
    example_inputs: tuple[Any, ...] | None = None,
    num_cores: int | None = None,
    winograd: bool = False,
    layout: str = "blocked",
    batch: list[int] | None = None,
    served: bool = False,
    fold_bn: bool = False,
    measure: Any = None,
    transfer_from: list[str | Path] | None = None,
    reporter: Any = None,
) -> Any:
    """Tune every task of ``model`` (lowered in ``layout``) and append the measurements to its history log.

    ``batch``: tune for each of these batch sizes at once (``lower_model``), into one log;
    ``served``: tune the tasks of the graph dynamo captures; ``fold_bn``: with batch norms folded
    into the convs (``lower_model``; serving folds when these records say it is faster).
    Re-running with the same log resumes: the budget counts what the log already holds.
    ``transfer_from`` logs (another machine's, another model's) give a head start: each task's
    best schedules there are timed here before the search (``driver.tune_tasks``).
    ``timeout`` (seconds) bounds the whole call, lowering included (``make tune`` promises a wall time),
    and alone is a budget too: the search runs until the clock stops it.
    TVM's own log goes to a file beside the log, not to stderr (``tvmlog``; its ``state.tvm_log`` says where).
    Returns the search state (per-task trials and best latencies, how the search stopped).
    """
    from .logs.records import log_files
    from .preflight import writable
    from .search import tvmlog
    from .search.driver import check_run, tune_tasks

    started = time.time()
    check_run(tuner, trials, trials_per_task, more, timeout)  # bad arguments refused before the seconds lowering takes
    spec = resolve_target(target, num_cores)
    log_path = writable(_log_path(log, model, spec), "log")
    if transfer_from:
        log_files(transfer_from)  # each exists
    with tvmlog.captured(tvmlog.beside(log_path)) as tvm_log:
        lowered = lower_model(model, spec, example_inputs, num_cores, winograd, layout, batch, served, fold_bn)
        state = tune_tasks(
            lowered.tasks,
            lowered.target,
            log_path,
            trials=trials,
            trials_per_task=trials_per_task,
            timeout=timeout,
            more=more,
            tuner=tuner,
            measure=measure,
            transfer_from=transfer_from,
            reporter=tvm_log.relaying(reporter),
            since=started,
        )
    state.tvm_log = tvm_log.summary()
    return state


def _on_tuned_tasks(model: str | Any, target: str | TargetSpec, log: str | Path | None, layout: str, fold_bn: bool, num_cores: int | None, run: Any) -> Any:
    """``run(tasks, target, history, log_path)`` on ``model`` lowered as it was tuned (``layout``,
    ``fold_bn``) and its log read first (a missing or corrupt log refused before the seconds lowering
    takes), TVM's messages kept beside the log: what every race over a log's records needs."""
    from .logs.records import read_log
    from .search import tvmlog

    spec = resolve_target(target, num_cores)
    log_path = _log_path(log, model, spec)
    history = read_log(log_path)
    with tvmlog.captured(tvmlog.beside(log_path)):
        lowered = lower_model(model, spec, num_cores=num_cores, layout=layout, fold_bn=fold_bn)
        return run(lowered.tasks, lowered.target, history, log_path)


def compare_siblings(
    model: str | Any,
    target: str | TargetSpec = "host",
    *,
    log: str | Path | None = None,
    layout: str = "blocked",
    fold_bn: bool = False,
    num_cores: int | None = None,
    rounds: int | None = None,
    reporter: Any = None,
) -> Any:
    """Time the best schedules of ``model``'s tasks that share a conv against each other, side by
    side, and append each task's winner to its log as a verdict (``search.siblings``). Lower it as
    it was tuned (``layout``, ``fold_bn``). Returns the verdicts, one per task compared."""
    from .search.siblings import ROUNDS, compare_siblings

    def run(tasks: Any, spec: TargetSpec, history: Any, log_path: Path) -> Any:
        return compare_siblings(tasks, spec, history, log_path, rounds or ROUNDS, reporter)

    return _on_tuned_tasks(model, target, log, layout, fold_bn, num_cores, run)


def refine(
    model: str | Any,
    target: str | TargetSpec = "host",
    *,
    log: str | Path | None = None,
    layout: str = "blocked",
    fold_bn: bool = False,
    num_cores: int | None = None,
    sweeps: int | None = None,
    timeout: float | None = None,
    reporter: Any = None,
) -> Any:
    """Race each of ``model``'s tasks' best schedules on this machine against its neighbours (one
    sampling decision away), side by side, and append each task's winner to its log as a verdict
    (``search.refine``); largest latency share first, stopping between tasks after ``timeout``
    seconds. Lower it as it was tuned (``layout``, ``fold_bn``). Returns the verdicts."""
    from .search.driver import check_timeout
    from .search.refine import SWEEPS, refine_tasks

    check_timeout(timeout)
    deadline = None if timeout is None else time.time() + timeout

    def run(tasks: Any, spec: TargetSpec, history: Any, log_path: Path) -> Any:
        return refine_tasks(tasks, spec, history, log_path, sweeps or SWEEPS, deadline, reporter)

    return _on_tuned_tasks(model, target, log, layout, fold_bn, num_cores, run)
