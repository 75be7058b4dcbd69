"""Rich views of a search: a live per-task table while tuning and a summary table at the end."""

from __future__ import annotations

import math

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .driver import TRANSFER, SearchState


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


def eta(state: SearchState) -> float | None:
    """Seconds until the search ends, or None while this run cannot know: the batches of its plan
    (``SearchState.plan``), each its phase's fixed part plus its trials' part (``driver.Pace``).

    A phase with trials left and no pace yet makes the ETA unknown, even when the other phase's pace
    alone reaches the deadline. The run's first batch sets no pace: it waits for the worker pools to
    start (a minute, loaded AMD EPYC Zen 3; ``SearchState.timed``).
    """
    if state.fit_before_deadline(state.next_phase()) < 1:
        return 0.0  # no further batch will start
    upcoming = state.plan()
    return None if upcoming is None else sum(seconds for _, _, seconds in upcoming)


def _eta_text(state: SearchState) -> str:
    seconds = eta(state)
    if seconds is not None:
        return f"ETA {_duration(seconds)}"
    replays = state.transfer_left and not state.paces[TRANSFER].batches
    waiting = "the replays'" if replays else "the search's"
    bound = f"; --timeout ends it within {_duration(state.deadline - state.now())}" if math.isfinite(state.deadline) else ""
    return f"ETA unknown until {waiting} pace is measured{bound}"


def status_line(state: SearchState, ended: bool = False) -> Text:
    """Model estimate, trials, elapsed time and, unless the run has ``ended``, the ETA (``eta``)."""
    elapsed = state.now() - state.started
    done = state.new_trials
    tuned = sum(math.isfinite(s.best) for s in state.states)
    est = state.estimated_latency()
    est_txt = f"{est * 1e3:.2f} ms" if math.isfinite(est) else f"n/a ({tuned}/{len(state.states)} tasks measured here)"
    carry = state.transfer_left
    return Text(
        f"estimated model latency {est_txt} | trials this run {done}/{state.budget} "
        f"(log total {state.total_trials}) | elapsed {_duration(elapsed)}"
        + ("" if ended else f" | {_eta_text(state)}")
        + (f" | {carry} schedule(s) from elsewhere still to time here" if carry else "")
    )


class _Status:
    """``status_line`` rendered afresh at every refresh of a Live view: elapsed time and ETA move between batches."""

    def __init__(self, state: SearchState) -> None:
        self.state = state

    def __rich__(self) -> Text:
        return status_line(self.state)


class LiveReporter:
    """Reporter for ``driver.tune_tasks`` that keeps a rich Live view up to date."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live: Live | None = None

    def __call__(self, event: str, state: SearchState) -> None:
        view = Group(task_table(state, "tuning"), _Status(state))
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
    console.print(status_line(state, ended=True))
    console.print(f"stopped: {state.stopped_by}")
    if state.tvm_log:
        console.print(state.tvm_log, soft_wrap=True, markup=False, highlight=False)
    if state.cost_model:
        console.print(f"cost model: {state.cost_model}")
    searched = [rho for _, carried, rho in state.predictions if not carried and rho == rho][:3]
    if searched:
        console.print(f"cost model rank correlation (predicted vs measured), first {len(searched)} search batch(es): {', '.join(f'{r:.2f}' for r in searched)}")
    if state.interrupted or state.stopped_by == "timeout":
        console.print(f"records are kept in {log_path}; resume with: {resume_cmd}")
