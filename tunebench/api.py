"""The Python API behind the CLI: model -> lowering -> tasks -> search -> records, as plain calls.

Everything the CLI prints comes from these functions, so a notebook gets the same results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .target import TargetSpec, resolve_target

LOG_DIR = Path("tuning_logs")


@dataclass
class LoweredModel:
    """A model lowered for one target: the fused Relax module and its tuning tasks."""

    name: str
    target: TargetSpec
    relax_mod: Any  # fused, direct convs in ``layout``: what records are applied to unless another lowering wins
    tasks: list[Any]
    example_inputs: tuple[Any, ...]
    model: Any
    source: Any = None  # the Relax module as imported, before legalization and fusion
    layout: str = "nchw"  # layout.LAYOUTS


def lower_model(
    model: str | Any,
    target: str | TargetSpec = "avx2",
    example_inputs: tuple[Any, ...] | None = None,
    num_cores: int | None = None,
    winograd: bool = False,
    layout: str = "blocked",
) -> LoweredModel:
    """Lower a zoo name, ``file.py:factory`` reference or ``nn.Module`` and extract its tasks.

    ``layout="blocked"`` lowers the convs in NCHW[x]c (``tunebench.layout``), the faster choice
    measured here; "nchw" is what logs tuned before it hold. ``winograd`` (NCHW only) adds the
    Winograd tasks of every eligible 3x3 conv to the direct ones, so a search tunes both
    implementations and serving can pick the faster per conv shape.
    """
    from .errors import TunebenchError
    from .frontend import lower, optimize
    from .tasks import extract_tasks
    from .winograd import signatures
    from .zoo import get_model

    spec = resolve_target(target, num_cores)
    if isinstance(model, str):
        name = model
        module, inputs = get_model(model)
        inputs = example_inputs or inputs
    else:
        if example_inputs is None:
            raise TypeError("example_inputs are required when passing an nn.Module")
        name, module, inputs = type(model).__name__, model, tuple(example_inputs)
    if winograd and layout != "nchw":
        raise TunebenchError("Winograd convs compete in the NCHW layout only: use --layout nchw with --winograd")
    source, relax_mod = lower(module, inputs, spec, layout)
    convs = signatures(source) if layout == "nchw" else []
    tasks = extract_tasks(relax_mod, spec, convs)
    if winograd and convs:
        known = {t.workload_key for t in tasks}
        tasks += [t for t in extract_tasks(optimize(source, spec, convs), spec, convs) if t.workload_key not in known]
        tasks.sort(key=lambda t: (-t.total_flop, t.name))
    return LoweredModel(name, spec, relax_mod, tasks, inputs, module, source, layout)


def default_log_path(model: str, target: TargetSpec) -> Path:
    """``tuning_logs/<model>-<target>.jsonl.gz`` (a file:factory reference uses its factory name), or
    the plain ``.jsonl`` where one exists: logs written before compression keep growing where they are."""
    stem = model.rsplit(":", 1)[-1] if ":" in model else model
    plain = LOG_DIR / f"{stem}-{target.name}.jsonl"
    return plain if plain.exists() else plain.with_name(plain.name + ".gz")


def tune(
    model: str | Any,
    target: str | TargetSpec = "avx2",
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
    measure: Any = None,
    transfer_from: list[str | Path] | None = None,
    reporter: Any = None,
) -> Any:
    """Tune every task of ``model`` (lowered in ``layout``) and append the measurements to its history log.

    Re-running with the same log resumes: the budget counts what the log already holds.
    ``transfer_from`` logs (another machine's, another model's) give a head start: each task's
    best schedules there are timed here before the search (``search.tune_tasks``).
    Returns the search state (per-task trials and best latencies, how the search stopped).
    """
    from .search import tune_tasks

    lowered = lower_model(model, target, example_inputs, num_cores, winograd, layout)
    log_path = Path(log) if log else default_log_path(model if isinstance(model, str) else lowered.name, lowered.target)
    kwargs = {"reporter": reporter} if reporter else {}
    return tune_tasks(
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
        **kwargs,
    )
