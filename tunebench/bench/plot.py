"""Tuning curves: a model's estimated latency as its history log grows, against trials and wall time.

The estimate is what the log alone supports: the sum over workloads of weight x best latency so
far (weight = how many times the model calls the workload). Before every workload has a
successful measurement that sum leaves terms out and understates the latency, so the curve
starts only at the first record where all of them have one, and the figure says where that is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunebenchError
from ..logs.records import HistoryLog


@dataclass
class Curve:
    """Estimated model latency after each record, from the first successful one on.

    Points where ``measured < workloads`` are partial sums: they leave the unmeasured workloads
    out, so they understate the latency and are drawn apart from the complete estimate.
    """

    trials: list[int]  # records read so far (failed ones count: they cost search time too)
    elapsed_s: list[float]  # seconds since the first record
    latency_s: list[float]
    measured: list[int]  # workloads with a successful measurement at that point
    workloads: int
    total_trials: int

    @property
    def first_complete(self) -> int | None:
        """The trial at which every workload had a measurement, if it came."""
        return next((t for t, m in zip(self.trials, self.measured, strict=True) if m == self.workloads), None)

    def split(self) -> tuple[slice, slice]:
        """Index ranges of the partial points and of the complete ones."""
        n = next((i for i, m in enumerate(self.measured) if m == self.workloads), len(self.measured))
        return slice(0, n), slice(n, None)


def tuning_curve(log: HistoryLog, weights: dict[str, int] | None = None) -> Curve:
    """Walk the records in the order they were measured, keeping the running estimate.

    ``weights`` (workload key -> calls per inference) defaults to the workloads the log defines.
    A log defines a workload only once it is first measured, so while a search is still in its
    first round the log does not know what it is missing: pass the model's tasks (``model_weights``).
    """
    weights = weights if weights is not None else {k: w.weight for k, w in log.workloads.items()}
    best: dict[str, float] = {}
    total = 0.0  # sum of weight x best over the workloads measured so far
    curve = Curve([], [], [], [], len(weights), len(log.records))
    start = log.records[0].time if log.records else 0.0
    rank: dict[str, tuple[int, float]] = {}
    for i, r in enumerate(log.records, 1):
        if r.ok and r.key in weights and (r.key not in rank or r.rank < rank[r.key]):  # a first cold record may raise the estimate
            total += weights[r.key] * (r.latency - best.get(r.key, 0.0))
            best[r.key], rank[r.key] = r.latency, r.rank
        if best:
            curve.trials.append(i)
            curve.elapsed_s.append(r.time - start)
            curve.latency_s.append(total)
            curve.measured.append(len(best))
    return curve


def model_weights(model: str, target: str = "avx2", layout: str = "blocked") -> dict[str, int]:
    """Workload key -> weight for every tuning task of ``model`` lowered in ``layout`` (seconds, not minutes)."""
    from ..lowering.model import lower_model

    return {t.workload_key: t.weight for t in lower_model(model, target, layout=layout).tasks}


def eager_ms_from_bench(path: str | Path) -> float:
    """PyTorch eager's median (ms) from a ``tunebench bench --json`` file."""
    try:
        data = json.loads(Path(path).read_text())
        eager = next(c for c in data["columns"] if c["name"] == "eager")
        return float(eager["median_s"]) * 1e3
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
        raise TunebenchError(f"{path}: no eager median in it (expected a tunebench bench --json file): {type(e).__name__}") from None


def plot_curve(log: HistoryLog, out: str | Path, *, title: str = "", eager_ms: float | None = None, weights: dict[str, int] | None = None) -> Curve:
    """Draw the curve (left: against trials, right: against wall time) into ``out``; return it."""
    curve = tuning_curve(log, weights)
    if not curve.trials:
        raise TunebenchError(f"nothing to plot yet: none of the {curve.workloads} workloads has a successful measurement in the log")

    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI toolkit imported
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    ms = [x * 1e3 for x in curve.latency_s]
    minutes = [s / 60 for s in curve.elapsed_s]
    partial, complete = curve.split()
    fig, (by_trial, by_time) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    for ax, xs, xlabel in ((by_trial, curve.trials, "trials measured"), (by_time, minutes, "wall time since first record (min)")):
        if ms[partial]:
            label = f"partial sum, {curve.measured[partial][-1]}/{curve.workloads} workloads measured (understates)"
            ax.step(xs[partial], ms[partial], where="post", color="grey", linestyle="--", label=label)
        if ms[complete]:
            ax.step(xs[complete], ms[complete], where="post", color="tab:blue", label=f"estimate: sum of weight x best over all {curve.workloads} workloads")
            ax.plot(xs[-1:], ms[-1:], "o", color="tab:blue")
        if eager_ms is not None:
            ax.axhline(eager_ms, color="tab:red", linestyle="--", label=f"PyTorch eager {eager_ms:.2f} ms")
        ax.set_xlabel(xlabel)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1g}"[0] in "1235" else ""))
        ax.set_xlim(left=0)
        ax.grid(True, which="both", alpha=0.3)
    if curve.first_complete and ms[partial]:
        by_trial.axvline(curve.first_complete, color="grey", linestyle=":")
        by_trial.annotate(
            f"trial {curve.first_complete}: first with all\n{curve.workloads} workloads measured",
            (curve.first_complete, 0.03),
            xycoords=("data", "axes fraction"),
            xytext=(6, 0),
            textcoords="offset points",
            va="bottom",
            fontsize=8,
            color="grey",
        )
    by_trial.set_ylabel("estimated model latency (ms, log scale)")
    fig.legend(*by_trial.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    now = f"now {ms[-1]:.2f} ms" if ms[complete] else f"no complete estimate yet ({curve.measured[-1]}/{curve.workloads} workloads measured)"
    fig.suptitle(f"{title or 'tuning curve'}: {curve.workloads} workloads, {curve.total_trials} trials, {now}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return curve


def plot_log(
    path: str | Path,
    out: str | Path,
    *,
    eager_ms: float | None = None,
    bench_json: str | Path | None = None,
    model: str | None = None,
    target: str | None = None,
    layout: str = "blocked",
) -> Curve:
    """Read a history log and plot it; the eager line comes from ``eager_ms`` or a bench JSON,
    the workload set from ``model``'s tasks in ``layout`` if given, else from the log.

    ``layout`` defaults to blocked, as ``tune`` does. A blocked lowering's tasks depend on the
    target's vector width, so ``target`` defaults to the one the log was tuned for: lowered for
    another, the model's tasks would match none of the log's records.
    """
    from ..logs.records import read_log
    from ..preflight import writable

    writable(out, "--out")
    if eager_ms is None and bench_json is not None:
        eager_ms = eager_ms_from_bench(bench_json)
    log = read_log(path)
    weights = None
    if model:
        from ..serve.choose import target_for_log

        weights = model_weights(model, target or target_for_log(log), layout)
    title = f"{Path(path).name} [{layout}]" if model else Path(path).name
    return plot_curve(log, out, title=title, eager_ms=eager_ms, weights=weights)
