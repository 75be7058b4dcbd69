"""Rich views of a search: a live per-task table while tuning and a summary table at the end."""

from __future__ import annotations

import math
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .search import SearchState


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if math.isfinite(seconds) else "-"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def task_table(state: SearchState, title: str) -> Table:
    """Per task: trials, best latency, GFLOP/s, and share of the model's estimated latency."""
    table = Table(title=title, title_justify="left")
    for col, just in (("task", "left"), ("op", "left"), ("x", "right"), ("trials", "right"), ("best ms", "right"), ("GFLOP/s", "right"), ("share", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    est = state.estimated_latency()
    for s in state.states:
        share = s.task.weight * s.best / est if math.isfinite(est) and est > 0 else math.nan
        table.add_row(
            s.task.name[:48],
            s.task.anchor,
            str(s.task.weight),
            f"{s.trials}" + (" (done)" if s.done and s.new_trials else ""),
            _ms(s.best),
            f"{s.gflops:.1f}" if s.gflops else "-",
            f"{share:.0%}" if math.isfinite(share) else "-",
        )
    return table


def status_line(state: SearchState) -> Text:
    """Model estimate, trials, elapsed time and an ETA from this run's rate."""
    elapsed = time.time() - state.started
    done = state.new_trials
    eta = min(elapsed / done * (state.budget - done) if done else math.inf, state.deadline - time.time())
    tuned = sum(math.isfinite(s.best) for s in state.states)
    est = state.estimated_latency()
    est_txt = f"{est * 1e3:.2f} ms" if math.isfinite(est) else f"n/a ({tuned}/{len(state.states)} tasks measured here)"
    carry = sum(len(s.carry) for s in state.states)
    return Text(
        f"estimated model latency {est_txt} | trials this run {done}/{state.budget} "
        f"(log total {state.total_trials}) | elapsed {_duration(elapsed)}"
        + (f" | ETA {_duration(max(0.0, eta))}" if math.isfinite(eta) else "")
        + (f" | {carry} schedule(s) from elsewhere still to time here" if carry else "")
    )


class LiveReporter:
    """Reporter for ``search.tune_tasks`` that keeps a rich Live view up to date."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live: Live | None = None

    def __call__(self, event: str, state: SearchState) -> None:
        view = Group(task_table(state, "tuning"), status_line(state))
        if event == "start":
            self.live = Live(view, console=self.console, refresh_per_second=1, transient=True)
            self.live.start()
        elif self.live is not None:
            self.live.update(view)
        if event == "finish" and self.live is not None:
            self.live.stop()
            self.live = None


class LineReporter:
    """Reporter for logs and CI: one line per batch instead of a live table."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()

    def __call__(self, event: str, state: SearchState) -> None:
        if event != "finish":
            self.console.print(status_line(state), soft_wrap=True)


def summary(state: SearchState, console: Console, log_path: str, resume_cmd: str) -> None:
    """The end-of-run table, how the run stopped, and how to resume it."""
    console.print(task_table(state, f"tuning summary: {log_path}"))
    console.print(status_line(state))
    console.print(f"stopped: {state.stopped_by}")
    if state.cost_model:
        console.print(f"cost model: {state.cost_model}")
    searched = [rho for _, carried, rho in state.predictions if not carried and rho == rho][:3]
    if searched:
        console.print(f"cost model rank correlation (predicted vs measured), first {len(searched)} search batch(es): {', '.join(f'{r:.2f}' for r in searched)}")
    if state.interrupted or state.stopped_by == "timeout":
        console.print(f"records are kept in {log_path}; resume with: {resume_cmd}")
