"""Schedule search: MetaSchedule's evolutionary search and XGBoost cost model, driven batch by batch.

MetaSchedule's own task scheduler runs in C++ and keeps its records to itself until the end. This
module drives the same pieces (TuneContext, EvolutionarySearch or ReplayTrace, XGBModel, builder,
runner) one batch at a time, so that

* every batch is appended to the history log as soon as it is measured (Ctrl-C or a crash loses
  at most the batch in flight),
* a resumed search knows what the log already holds: prior records seed the database the
  evolutionary search starts from and the cost model, count against the budget, and a task whose
  per-task budget is spent is not searched again,
* budgets are exact (the last batch is cut to what is left); a time budget alone (``timeout``) is
  a budget too: the search runs until the clock stops it,
* the task to search next is the one with the largest share of the model's estimated latency, and
* schedules timed elsewhere carry over: records of another machine or thread count
  (``records.Record.measured_class``), of ``--from`` logs, or timed under another protocol
  (``records.PROTOCOLS``) are never this machine's bests; each task without a record of its own
  first gets its ``CARRY_OVER`` best such schedules timed here (``traces.schedule_for`` replays
  them), so the search starts from the old winners; a task no log holds gets those of the
  workloads computing its op sequence at other extents (another batch size or conv shape),
  their tiles refitted to its loops (``traces.refitted``),
* a task with nothing timed here yet gets a first batch of ``FIRST_BATCH`` (its candidates come
  from an untrained model anyway), so a short run times every task sooner, and
* the cost model is saved beside the log and warm-started from it (``costmodel``).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TunebenchError
from ..logs import records as rec
from ..logs.traces import marked, op_signature, refitted, relatives, schedule_for
from ..lowering.tasks import Task, model_latency
from ..target import TargetSpec, class_distance, host_fingerprint, runnable, same_preset
from ..target import identity as target_identity
from . import costmodel
from .measure import import_tensor_intrinsics, make_builder, make_runner
from .settings import MeasureConfig

TUNERS = ("xgb", "random")
MAX_BATCH = 64
MIN_BATCH = 8
FIRST_BATCH = 16  # a task with no time here gets this many first, so a short run times every task sooner
CARRY_OVER = 8
# Candidates the evolutionary search evolves per batch. MetaSchedule's default, 512, spent 44-61 s of
# each 64-candidate ResNet18 batch (89-142 s in all) on 2 cores, where 128 spent 11-16 s (batches of
# 45-86 s). From the same log, 15 minutes each (AMD EPYC Zen 3): 512 timed 456 candidates and moved
# the estimate 30.43 -> 29.09 ms; 128 timed 776 and reached 28.73, ahead at every point in time.
POPULATION = 128
# Candidates built and timed together when a batch has an end time (``SearchState.batch_end``): its
# builds and runs take 0.5-1.4 s a candidate depending on the task (64-candidate ResNet18 batches,
# AMD EPYC Zen 3), so a batch stops between chunks instead of running on past its planned end.
CHUNK = 8
# The max_trials MetaSchedule's strategies get when only the clock bounds a run (they need a number):
# at a trial a second, 30 years.
CLOCK_ONLY_TRIALS = 10**9
# A task's priority grows with its headroom against its kin's best throughput (``headroom``) at most
# this much: a 1x1 conv's memory traffic keeps it below a 3x3 conv's speed however it is scheduled.
MAX_HEADROOM = 2.0


@dataclass
class TaskState:
    """What the search knows about one task: its trials so far and best measured latency."""

    task: Task
    prior_trials: int = 0
    new_trials: int = 0
    best_record: rec.Record | None = None  # by ``Record.rank``
    errors: int = 0
    done: bool = False
    ctx: Any = None
    carry: list[rec.Record] = field(default_factory=list)  # schedules to time again under this run's protocol

    @property
    def trials(self) -> int:
        return self.prior_trials + self.new_trials

    @property
    def best(self) -> float:
        """Seconds: the best record's latency (inf before any success)."""
        return self.best_record.latency if self.best_record is not None else math.inf

    def consider(self, r: rec.Record) -> None:
        if r.ok and (self.best_record is None or r.rank < self.best_record.rank):
            self.best_record = r

    @property
    def gflops(self) -> float:
        return self.task.flop / self.best / 1e9 if math.isfinite(self.best) else 0.0


TRANSFER, SEARCH = "transfer", "search"  # a run's phases: schedules from elsewhere timed here (``_carry_over``), then the search


@dataclass
class Pace:
    """One phase's finished batches, each as (trials, wall seconds, seconds of those spent building
    and timing). A replayed schedule is a build and a run; a searched one also waits for the
    evolutionary search and the cost model (4-5x slower, Intel Xeon emeraldrapids, issue 25), so a
    run's overall rate predicts neither phase. Within a phase a batch costs a fixed part (the
    search, the cost model, the log) plus a part per trial (its builds and runs): a 12-trial last
    batch took 100 s where 41-trial ones took 90-106 s (ResNet18), and 8-16-trial batches ~30 s
    where a 64-trial one took 89 s (MobileNetV2), AMD EPYC Zen 3. Medians over the batches: one
    slow batch (another job on the host, a slow task) moves neither part."""

    done: list[tuple[int, float, float]] = field(default_factory=list)

    def add(self, trials: int, seconds: float, measuring: float) -> None:
        if trials:
            self.done.append((trials, seconds, min(measuring, seconds)))

    @property
    def batches(self) -> int:
        return len(self.done)

    @property
    def trials(self) -> int:
        return sum(n for n, _, _ in self.done)

    @property
    def overhead(self) -> float:
        """A batch's fixed seconds, whatever its size; nan before the first batch."""
        return statistics.median(sec - m for _, sec, m in self.done) if self.done else math.nan

    @property
    def per_trial(self) -> float:
        """Seconds each trial adds to its batch; nan before the first batch."""
        return statistics.median(m / n for n, _, m in self.done) if self.done else math.nan

    def batch_seconds(self, trials: int) -> float:
        """How long a batch of ``trials`` should take (nan before the first batch)."""
        return self.overhead + trials * self.per_trial

    def trials_within(self, seconds: float) -> float:
        """The most trials one batch can take and still end within ``seconds`` (inf when trials cost nothing)."""
        if seconds < self.overhead or seconds <= 0:
            return 0.0
        if math.isinf(seconds) or self.per_trial <= 0:
            return math.inf
        return math.floor((seconds - self.overhead) / self.per_trial)


@dataclass
class SearchState:
    """The whole search as the progress view and the final summary see it."""

    states: list[TaskState]
    budget: float  # trials this run may still spend: an int, or inf when only ``deadline`` stops the run
    started: float = math.nan  # default: ``now()`` at creation
    deadline: float = math.inf  # when ``timeout`` stops the run
    # the clock of the run's schedule and ETA, looked up when the state is made: a test that fakes
    # ``driver.time`` fakes the deadline too (bound at import, it silently kept the real clock)
    now: Callable[[], float] = field(default_factory=lambda: time.time)
    paces: dict[str, Pace] = field(default_factory=lambda: {TRANSFER: Pace(), SEARCH: Pace()})
    interrupted: bool = False
    stopped_by: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase, for benchmarks
    first: tuple[str, Pace] | None = None  # the run's first batch and its phase, the worker pools' start-up included (``timed``)
    search_batch: int = MAX_BATCH  # candidates a search batch asks for (``num_trials_per_iter``), set when the search opens
    # per batch the cost model predicted before measuring: (task, carried over?, rank correlation
    # of its scores with the measured speeds); how much a warm-started model knows, for benchmarks
    predictions: list[tuple[str, bool, float]] = field(default_factory=list)
    cost_model: str = ""  # where the cost model came from / went to, for the summary
    tvm_log: str = ""  # where TVM's own messages of this run went (``tvmlog``), for the summary

    def __post_init__(self) -> None:
        if math.isnan(self.started):
            self.started = self.now()

    def clock(self, phase: str, since: float) -> float:
        """Add the time since ``since`` to ``phase``; return now (to chain phases)."""
        now = self.now()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - since
        return now

    def timed(self, phase: str, trials: int, seconds: float, measuring: float) -> None:
        """Count a finished batch in its phase's pace; the run's first batch in none: it also waits for
        the worker pools to start (27 s before 7 replays where the next 8 took 5 s, MobileNetV2, AMD EPYC
        Zen 3), which no later batch pays."""
        if trials and self.first is None:
            self.first = (phase, Pace())
            self.first[1].add(trials, seconds, measuring)
        else:
            self.paces[phase].add(trials, seconds, measuring)

    def plan(self) -> list[tuple[str, int, float]] | None:
        """The batches still to come as (phase, trials, seconds), in order; None while a phase with
        trials left has no pace, or while nothing but a signal ends the run.

        Sizes are those ``_search`` runs (``_batch_sizes``); each batch costs its phase's ``Pace``.
        Under a deadline the batches fill the time to it: the last one that fits is cut to what is
        left, and a batch that would leave too little for another (its fixed part and one ``CHUNK``)
        shares its time with the next if both get that much, so the run ends at the deadline rather
        than a fraction of a batch before it (a 10-minute ``make tune`` ended 2 min 21 s early, AMD
        EPYC Zen 3). A batch then measures until its planned end (``batch_end``).
        """
        if all(s.done for s in self.states):
            return []
        if math.isinf(self.budget) and math.isinf(self.deadline):
            return None
        transfer = self.transfer_left
        left = {TRANSFER: transfer, SEARCH: max(0, self.budget - self.new_trials - transfer)}
        if any(trials and not self.paces[phase].batches for phase, trials in left.items()):
            return None
        sizes = _batch_sizes(self)  # endless under a deadline alone: the deadline ends this loop
        room, out, nxt = max(0.0, self.deadline - self.now()), [], next(sizes, None)
        while nxt is not None:
            (phase, trials), nxt = nxt, next(sizes, None)
            pace = self.paces[phase]
            fits = int(min(trials, pace.trials_within(room)))
            seconds = pace.batch_seconds(fits) if fits >= 1 else 0.0
            if seconds <= 0:
                break  # the deadline ends the run here (or batches cost nothing: it ends now)
            # the least batch worth its fixed part: one chunk
            least = self.paces[nxt[0]].batch_seconds(min(nxt[1], CHUNK)) if nxt else math.inf
            if math.isfinite(room) and 0 < room - seconds < least <= room / 2:  # too little would be left for another batch
                seconds = room / 2
                fits = int(min(fits, pace.trials_within(seconds)))
            out.append((phase, fits, seconds))
            room -= seconds
        return out

    def batch_end(self) -> float:
        """When the next batch must be done measuring: the deadline, and when the deadline (not the
        trial budget) ends the plan, the end the plan gives this batch.

        Search batches of one run vary with their task: 89-142 s for 64 candidates of ResNet18's convs
        (their builds 25-82 s, AMD EPYC Zen 3), so a plan of phase medians was 76% off when one slow
        batch was left. A batch measures in chunks (``CHUNK``) and stops before one would end after
        this: it ends early or on time, and the last one by the deadline. Under a trial budget a batch
        cut short would only leave its trials to one more batch, so there it runs whole.
        """
        upcoming = self.plan()
        if not upcoming or sum(n for _, n, _ in upcoming) >= self.budget - self.new_trials:
            return self.deadline
        return min(self.now() + upcoming[0][2], self.deadline)

    def measuring(self) -> float:
        """Seconds spent so far building and timing candidates: the part of a batch that grows with its size."""
        return self.seconds.get("build", 0.0) + self.seconds.get("run", 0.0)

    @property
    def transfer_left(self) -> int:
        """Schedules from elsewhere still to time here, on tasks still searched."""
        return sum(len(s.carry) for s in self.states if not s.done)

    def next_phase(self) -> str:
        """The phase of the next batch: carry-over comes first (``_priority``)."""
        return TRANSFER if self.transfer_left else SEARCH

    def fit_before_deadline(self, phase: str) -> float:
        """Trials of ``phase`` one batch can take and still end by the deadline (inf without one).

        Below 1 the run stops: ``--timeout`` is a promise about wall clock, not about batch starts,
        and a search batch takes minutes on a slow host. A batch is cut to the trials that fit, and
        none starts where its fixed part alone would not (``Pace``: sized by trials alone, a
        10-minute ``make tune`` ran 11 min 17 s). A phase with no finished batch yet gets
        ``MIN_BATCH``: a first batch measures its pace instead of overshooting on the other phase's
        (the run's first batch, which sets no pace for the ETA, bounds its phase's next batch).
        """
        if not math.isfinite(self.deadline):
            return math.inf
        left = self.deadline - self.now()
        pace = self.paces[phase]
        if not pace.batches and self.first is not None and self.first[0] == phase:
            pace = self.first[1]  # slower than the phase's batches to come: safe for a deadline
        if not pace.batches:
            return float(MIN_BATCH) if left > 0 else 0.0
        return pace.trials_within(left)

    @property
    def new_trials(self) -> int:
        return sum(s.new_trials for s in self.states)

    @property
    def total_trials(self) -> int:
        return sum(s.trials for s in self.states)

    def estimated_latency(self) -> float:
        """``tasks.model_latency`` over the best latencies so far; inf while a task it needs has none."""
        best = {s.task.workload_key: s.best for s in self.states}
        return model_latency([s.task for s in self.states], lambda t: best[t.workload_key])


def _batch_sizes(state: SearchState) -> Iterator[tuple[str, int]]:
    """(phase, trials) of the batches still to come, in the order and sizes ``_search`` runs them:
    each task's schedules from elsewhere, a first batch for each task with nothing timed here
    (``FIRST_BATCH``), then search batches of ``search_batch``, while the trial budget lasts."""
    left = state.budget - state.new_trials
    active = [s for s in state.states if not s.done]
    sizes = [(TRANSFER, len(s.carry)) for s in active if s.carry]
    sizes += [(SEARCH, int(min(_batch_cap(s), state.search_batch))) for s in active if not s.carry and math.isfinite(_batch_cap(s))]
    for phase, n in sizes:
        while n > 0 and left > 0:
            k = int(min(n, MAX_BATCH, left))
            yield phase, k
            n, left = n - k, left - k
    while left > 0:
        k = int(min(state.search_batch, left))
        yield SEARCH, k
        left -= k


Reporter = Callable[[str, SearchState], None]


def _quiet(event: str, state: SearchState) -> None:
    """Reporter that reports nothing (``--quiet``)."""


def _priority(s: TaskState, kin: dict[str, float]) -> tuple[int, float]:
    """Carry-over first, then unmeasured tasks (round robin), then the largest share of estimated
    model latency, scaled by the task's headroom (``headroom``) and discounted by the trials
    already spent on it (returns diminish as a search converges)."""
    if s.carry:
        return (2, -s.trials)
    if s.trials == 0 or not math.isfinite(s.best):
        return (1, -s.trials)
    return (0, s.task.weight * s.best * headroom(s, kin) / math.sqrt(1 + s.trials / MAX_BATCH))


def kin_gflops(states: list[TaskState]) -> dict[str, float]:
    """The best throughput any task of each op sequence (``op_signature``) reaches so far."""
    out: dict[str, float] = {}
    for s in states:
        sig = op_signature(s.task.name)
        out[sig] = max(out.get(sig, 0.0), s.gflops)
    return out


def headroom(s: TaskState, kin: dict[str, float]) -> float:
    """How much faster ``s`` would run at the throughput its best kin reaches (Ansor's task
    scheduler guesses a task's reachable speed from similar tasks the same way), capped at
    ``MAX_HEADROOM``. Without it the search spent its trials by latency share alone: ResNet18's
    stride-2 3x3 convs (Zen 3) sat at 85-103 GFLOP/s after 72-136 trials while its stride-1 ones
    reached 120-160 after 150-720, and ONNX Runtime ran the stride-2 ones at 114-145. With it, 2261
    trials took them to 115-133 in the log; the served model did not move (docs/peers.md): the log's
    lone timings, not the model, are what any priority steers by."""
    best = kin.get(op_signature(s.task.name), 0.0)
    return min(MAX_HEADROOM, max(1.0, best / s.gflops)) if s.gflops > 0 else 1.0


@dataclass
class Priors:
    """What earlier runs measured for this run's target (same codegen, any core count).

    Only ``local`` records, timed on this kind of machine (``Record.measured_class``), count as
    bests and train the cost model; ``sources`` (other machines, other thread counts, ``--from``
    logs) are schedules worth timing here first (``_carry_over``), not rivals.
    """

    counts: dict[str, int] = field(default_factory=dict)  # trials per workload in the log, wherever timed
    local: list[rec.Record] = field(default_factory=list)
    sources: list[rec.Record] = field(default_factory=list)
    given: list[rec.Record] = field(default_factory=list)  # the ``--from`` logs' (also in ``sources``): timed here even for a task the log holds
    cost_models: list[Path] = field(default_factory=list)  # saved cost models to warm-start from, the log's own first
    workloads: dict[str, rec.WorkloadEntry] = field(default_factory=dict)  # the TIR ``sources`` were tuned on
    here: str = ""  # this machine's ``measurement_class``: ``sources`` of the nearest class are timed first


def load_priors(log_path: Path, target: TargetSpec, here: str, transfer_from: list[str | Path] | None = None) -> Priors:
    """Split the log's records for ``target`` into this machine's and the rest; add ``--from`` logs' runnable records."""
    log = rec.read_log(log_path) if log_path.exists() else rec.HistoryLog()
    mine = target.identity
    priors = Priors(workloads=dict(log.workloads), here=here)
    for r in log.records:
        if target_identity(r.target) == mine:
            priors.counts[r.key] = priors.counts.get(r.key, 0) + 1
            (priors.local if r.measured_class == here else priors.sources).append(r)
        elif r.ok and same_preset(r.target, target.config) and runnable(r.target):
            priors.sources.append(r)  # the preset's other mcpu (Intel's records on a Zen 4): timed here first, never a best
    for path in transfer_from or []:
        other = _runnable_records(path)
        priors.sources += other.records
        priors.given += other.records
        for key, w in other.workloads.items():
            priors.workloads.setdefault(key, w)
    priors.cost_models = [p for p in (costmodel.model_path(x) for x in [log_path, *(transfer_from or [])]) if p.is_file()]
    return priors


def _runnable_records(path: str | Path) -> rec.HistoryLog:
    """A ``--from`` log's successful records this CPU can execute, and its workloads; refuse a log with none."""
    log = rec.read_log(path)
    ok = [r for r in log.records if r.ok]
    usable = [r for r in ok if runnable(r.target)]
    if not usable:
        mcpus = ", ".join(sorted({str(r.target.get("mcpu", "?")) for r in ok})) or "none"
        raise TunebenchError(f"--from {path}: none of its {len(ok)} successful record(s) can run on this CPU (mcpu: {mcpus})")
    return rec.HistoryLog(workloads=log.workloads, records=usable)


def tune_tasks(
    tasks: list[Task],
    target: TargetSpec,
    log_path: str | Path,
    *,
    trials: int | None = None,
    trials_per_task: int | None = None,
    timeout: float | None = None,
    more: int | None = None,
    tuner: str = "xgb",
    measure: MeasureConfig | None = None,
    transfer_from: list[str | Path] | None = None,
    seed: int = 0,
    reporter: Reporter = _quiet,
    since: float | None = None,
) -> SearchState:
    """Search schedules for ``tasks``, appending every measurement to ``log_path``.

    ``trials`` is the budget for the whole model, counted over the log (a resumed search with the
    same ``trials`` does nothing more); ``trials_per_task`` caps each task likewise. ``timeout``
    bounds this run's wall clock in seconds, counted from ``since`` (default: this call; ``api.tune``
    passes its own start, lowering included), and ``more`` its trials, on top of the log. Before
    searching a task with no record timed on this machine, its best schedules from elsewhere (the
    log's other machines, ``transfer_from`` logs) are timed here (``_carry_over``). Returns the
    final state, with ``interrupted`` set if Ctrl-C ended it (the records up to the last finished batch are in the log).
    """
    entered = time.time() if since is None else since  # reading the log's priors takes seconds: they count
    check_run(tuner, trials, trials_per_task, more, timeout)
    measure = measure or MeasureConfig(workers=target.num_cores)
    log_path = Path(log_path)
    host = host_fingerprint()
    priors = load_priors(log_path, target, target.measurement_class(), transfer_from)
    states = _task_states(tasks, priors, measure.protocol)
    per_task = trials_per_task if trials_per_task is not None else math.inf
    budget = _budget(states, trials, per_task, more)
    state = SearchState(states, budget, started=entered)
    state.deadline = entered + timeout if timeout is not None else math.inf
    for s in states:
        s.done = s.trials >= per_task
    active = [s for s in states if not s.done]
    reporter("start", state)
    if budget <= 0 or not active:
        state.stopped_by = "budget already spent by the log"
        reporter("finish", state)
        return state
    batcher = _open_batcher(tasks, target, log_path, tuner, measure, host, state, active, priors, per_task, seed)
    _search(batcher, state, per_task, reporter)
    if batcher.cost_model is not None and state.new_trials:
        path = costmodel.model_path(log_path)
        n = costmodel.save(batcher.cost_model, path, target.measurement_class())
        state.cost_model = (state.cost_model + "; " if state.cost_model else "") + f"saved to {path} ({n} samples)"
    reporter("finish", state)
    return state


def check_run(tuner: str, trials: int | None, trials_per_task: int | None, more: int | None, timeout: float | None) -> None:
    """Refuse an unknown tuner, a run with nothing to stop it, or a negative budget: callers check
    before lowering the model, so a mistyped command costs no work."""
    if tuner not in TUNERS:
        raise TunebenchError(f"unknown tuner {tuner!r}; choose one of: {', '.join(TUNERS)}")
    if trials is None and trials_per_task is None and more is None and timeout is None:
        raise TunebenchError("give a budget: --trials, --trials-per-task, --more and/or --timeout (seconds)")
    for flag, value in (("--trials", trials), ("--trials-per-task", trials_per_task), ("--more", more)):
        if value is not None and value < 0:
            raise TunebenchError(f"{flag} takes a number of trials, 0 or more; got {value}")
    check_timeout(timeout)


def check_timeout(timeout: float | None) -> None:
    """Refuse a ``--timeout`` that is not a finite number of seconds above 0 (nan too); None: no deadline."""
    if timeout is not None and not (0 < timeout < math.inf):
        raise TunebenchError(f"--timeout takes seconds, more than 0; got {timeout}")


def _task_states(tasks: list[Task], priors: Priors, protocol: str) -> list[TaskState]:
    best = rec.HistoryLog(records=priors.local).best()
    return [
        TaskState(t, prior_trials=priors.counts.get(t.workload_key, 0), best_record=best.get(t.workload_key), carry=_carry_over(t, priors, protocol))
        for t in tasks
    ]


def _budget(states: list[TaskState], trials: int | None, per_task: float, more: int | None) -> float:
    """Trials this run may spend: the model's budget and each task's cap, counting the log, and ``more``;
    inf when none is given (a time budget alone)."""
    total_cap = trials if trials is not None else math.inf
    budget = total_cap - sum(s.trials for s in states)
    budget = min(budget, sum(max(0, per_task - s.trials) for s in states), more if more is not None else math.inf)
    return budget if math.isinf(budget) else int(max(0, budget))


def _open_batcher(
    tasks: list[Task],
    target: TargetSpec,
    log_path: Path,
    tuner: str,
    measure: MeasureConfig,
    host: dict[str, Any],
    state: SearchState,
    active: list[TaskState],
    priors: Priors,
    per_task: float,
    seed: int,
) -> _Batcher:
    """The shared MetaSchedule pieces, and a TuneContext per active task seeded with this machine's records."""
    budget = state.budget
    batch = state.search_batch = int(min(MAX_BATCH, max(MIN_BATCH, budget / max(1, len(active)))))
    # TVM's thread pool defaults to half the hardware threads (1 on a 2-vCPU VM): candidates must be
    # timed with the threads the target is tuned for. Measurement workers inherit this at spawn.
    os.environ["TVM_NUM_THREADS"] = str(target.num_cores)
    t = state.now()
    batcher = _Batcher.open(tasks, target, log_path, tuner, measure, host)
    batcher.sources = priors.workloads
    if batcher.cost_model is not None and priors.cost_models:
        batcher.warm_start = priors.cost_models[0]
        n = costmodel.load(batcher.cost_model, batcher.warm_start, target.measurement_class())
        state.cost_model = f"warm-started from {batcher.warm_start} ({n} samples)"
    for s in active:
        batcher.prepare(s, int(min(per_task - s.trials, budget, CLOCK_ONLY_TRIALS)), batch, priors.local, seed + state.states.index(s), tuner)
    state.clock("prepare", t)
    return batcher


def _search(batcher: _Batcher, state: SearchState, per_task: float, reporter: Reporter) -> None:
    """Batch after batch to the task with the highest ``_priority``, until budget, tasks, clock or a signal stop it."""
    states = state.states
    try:
        with _StopRequest() as stop:
            while not _stop_reason(state, stop.signum):
                pool, kin = [s for s in states if not s.done], kin_gflops(states)
                s = max(pool, key=lambda s: _priority(s, kin))
                left = min(state.budget - state.new_trials, state.fit_before_deadline(TRANSFER if s.carry else SEARCH))
                t, m, until = state.now(), state.measuring(), state.batch_end()
                measured, carried = batcher.run(s, int(min(left, per_task - s.trials, _batch_cap(s), MAX_BATCH)), state, until)
                state.timed(TRANSFER if carried else SEARCH, measured, state.now() - t, state.measuring() - m)
                s.new_trials += measured
                s.done = measured == 0 or s.trials >= per_task  # 0: the search space is exhausted
                if measured:
                    reporter("batch", state)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, the log holds every finished batch
        state.interrupted = True
        state.stopped_by = "interrupted (Ctrl-C twice)"
    finally:
        for s in states:
            if s.ctx is not None:
                s.ctx.post_tuning()


def _batch_cap(s: TaskState) -> float:
    """``FIRST_BATCH`` for a task with nothing timed here yet (its carry-over aside), else no cap.

    A first batch is picked by an untrained model anyway; 64 of them per task meant a 34-task
    ResNet50 ran ~1900 trials (about 25 minutes) before the model's latency could be estimated.
    """
    return FIRST_BATCH if not s.carry and not math.isfinite(s.best) else math.inf


def _stop_reason(state: SearchState, signum: int | None) -> str:
    """Why the search should stop now ('' to go on); sets ``state.stopped_by`` (and ``interrupted``)."""
    if signum is not None:
        state.interrupted = True
        state.stopped_by = f"interrupted ({signal.Signals(signum).name}) after the batch in flight"
    elif state.budget - state.new_trials <= 0:
        state.stopped_by = "trial budget reached"
    elif all(s.done for s in state.states):
        state.stopped_by = "every task reached its per-task budget"
    elif state.fit_before_deadline(state.next_phase()) < 1:
        state.stopped_by = "timeout"
    return state.stopped_by


@dataclass
class _Batcher:
    """The MetaSchedule pieces one search shares across tasks, and one batch's round trip through
    them: generate candidates, build and time them, feed the results back, append them to the log."""

    target: TargetSpec
    database: Any  # ms.database.MemoryDatabase: what the evolutionary search starts from
    cost_model: Any  # ms.cost_model.XGBModel, or None for random search
    workloads: dict[str, rec.WorkloadEntry]  # as the log stores them
    ms_workloads: dict[str, Any]  # as the database stores them
    builder: Any
    runner: Any
    writer: rec.LogWriter
    host: dict[str, Any]
    protocol: str
    warm_start: Path | None = None  # the saved cost model this search started from, if any
    sources: dict[str, rec.WorkloadEntry] = field(default_factory=dict)  # the TIR carried-over traces were tuned on

    @classmethod
    def open(cls, tasks: list[Task], target: TargetSpec, log_path: Path, tuner: str, measure: MeasureConfig, host: dict[str, Any]) -> _Batcher:
        from tvm.s_tir import meta_schedule as ms

        database = ms.database.MemoryDatabase()
        import_tensor_intrinsics()
        return cls(
            target=target,
            database=database,
            cost_model=ms.cost_model.XGBModel(num_tuning_cores=target.num_cores, adaptive_training=True) if tuner == "xgb" else None,
            workloads={t.workload_key: rec.WorkloadEntry(t.workload_key, t.name, t.flop, ms.database.Workload(t.mod).as_json()[1], t.weight) for t in tasks},
            ms_workloads={t.workload_key: database.commit_workload(t.mod) for t in tasks},
            builder=make_builder(measure),
            runner=make_runner(measure),
            writer=rec.LogWriter(log_path),
            host=host,
            protocol=measure.protocol,
        )

    def _transferred(self, r: rec.Record, workload: Any, workload_key: str) -> Any:
        """A carried-over record as a candidate for this task (``traces.schedule_for``), or None
        when its schedule does not apply here."""
        from tvm.s_tir.meta_schedule.arg_info import ArgInfo
        from tvm.s_tir.meta_schedule.search_strategy import MeasureCandidate

        source = self.sources.get(r.key)
        if r.key == workload_key:
            sch = schedule_for(r.trace, workload.mod, source, self.target.tvm())
        else:  # a relative's schedule (``_relatives``): its tiles refitted to this task's loops
            sch = refitted(r.trace, workload.mod, source, self.target.tvm()) if source is not None else None
        return None if sch is None else MeasureCandidate(sch, ArgInfo.from_entry_func(sch.mod, remove_preproc=True))

    def prepare(self, s: TaskState, max_trials: int, batch: int, prior: list[rec.Record], rand_state: int, tuner: str) -> None:
        """Give the task its TuneContext, seeded with what the log already measured for it."""
        from tvm.s_tir import meta_schedule as ms

        s.ctx = ms.TuneContext(
            mod=s.task.mod,
            target=self.target.tvm(),
            space_generator="post-order-apply",
            search_strategy=_strategy(tuner, max_trials),
            task_name=s.task.name,
            num_threads=self.target.num_cores,
            rand_state=rand_state,
        )
        # a warm-started cost model already learned from the log's records: feeding them again would count them twice
        _seed_from_log(s, prior, self.ms_workloads[s.task.workload_key], self.database, None if self.warm_start else self.cost_model)
        s.ctx.pre_tuning(
            max_trials=max_trials,
            num_trials_per_iter=batch,
            design_spaces=s.ctx.generate_design_space(),
            database=self.database,
            cost_model=self.cost_model,
        )

    def run(self, s: TaskState, limit: int, state: SearchState, until: float = math.inf) -> tuple[int, bool]:
        """Measure up to ``limit`` candidates of task ``s`` (its carry-over first), those ``until`` leaves
        time for (``_measure``), and log them; return how many (0 when the search strategy has none
        left) and whether they were carried over."""
        from tvm.s_tir import meta_schedule as ms

        t = state.now()
        workload = self.ms_workloads[s.task.workload_key]
        cands: list[Any] = []
        if s.carry:  # schedules from elsewhere first; those that do not apply here are dropped
            picked, s.carry = s.carry[:limit], s.carry[limit:]
            cands = [c for c in (self._transferred(r, workload, s.task.workload_key) for r in picked) if c is not None]
        carried = bool(cands)
        if not cands:
            cands = list(s.ctx.generate_measure_candidates() or [])[:limit]
        state.clock("search", t)
        if not cands:
            return 0, False
        tvm_target = self.target.tvm()
        predicted = self.cost_model.predict(s.ctx, cands) if self.cost_model is not None else None  # random until trained, as the search sees it
        results, measured_on = _measure(self.builder, self.runner, tvm_target, cands, state, until)
        cands = cands[: len(results)]  # the rest were never built: the search forgets them
        predicted = predicted[: len(results)] if predicted is not None else None
        raw = [[float(x) for x in res.run_secs] if res.run_secs is not None else None for res in results]  # what the log keeps
        results = [_summarized(res, self.protocol) for res in results]  # what MetaSchedule ranks by
        if predicted is not None:
            state.predictions.append((s.task.name, carried, rank_correlation(predicted, results)))
        t = state.now()
        if not carried:  # the search strategy counts its own candidates only
            s.ctx.notify_runner_results(cands, results)
        if self.cost_model is not None:
            self.cost_model.update(s.ctx, cands, results)
        t = state.clock("cost model", t)
        batch_records = []
        for cand, res, where, samples in zip(cands, results, measured_on, raw, strict=True):
            error = _short_error(res.error_msg)
            r = rec.Record(
                key=s.task.workload_key,
                trace=marked(rec.to_plain(cand.sch.trace.as_json(remove_postproc=False))),  # a schedule carried through its anchor lost the mark
                args_info=[rec.to_plain(a.as_json()) for a in cand.args_info],
                run_secs=samples,
                error=error,
                target=dict(self.target.config),
                host=self.host,
                tvm=self.host["tvm"],
                measured_on=where,
                protocol=self.protocol,
            )
            if r.ok:  # the search goes on from it; a carried schedule marked as the log's records are (``_seed_from_log``)
                # (``ms_record`` took 6.8 ms a record, AMD EPYC Zen 4: the search's own candidates carry the mark already)
                if carried:
                    self.database.commit_tuning_record(r.ms_record(workload))
                else:
                    self.database.commit_tuning_record(ms.database.TuningRecord(cand.sch.trace, workload, res.run_secs, tvm_target, cand.args_info))
            batch_records.append(r)
            s.errors += r.error is not None
            s.consider(r)
        self.writer.append(batch_records, self.workloads)
        state.clock("log", t)
        return len(cands), carried


class _StopRequest:
    """Turn the first SIGINT/SIGTERM into a request to stop after the batch in flight.

    A KeyboardInterrupt raised inside a MetaSchedule call crosses TVM's C++ frames and ends in
    ``std::terminate`` (seen here: a segfault report instead of a summary). So the first signal only
    sets ``signum``; the loop stops at the next batch boundary, and a second Ctrl-C interrupts at once.
    Outside the main thread signal handlers cannot be installed, and nothing is changed.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after the batch in flight (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _strategy(tuner: str, max_trials: int) -> Any:
    """Evolutionary search for ``xgb`` (``POPULATION``, scaled down for small budgets: evolving 128
    candidates to measure 8 wastes most of a test's time), random sampling for ``random``."""
    from tvm.s_tir.meta_schedule.search_strategy import EvolutionarySearch, ReplayTrace

    if tuner == "random":
        return ReplayTrace()
    return EvolutionarySearch(population_size=int(min(POPULATION, max(64, 8 * max_trials))))


def _seed_from_log(s: TaskState, prior: list[rec.Record], workload: Any, database: Any, cost_model: Any) -> None:
    """Give the evolutionary search and the cost model what earlier runs measured for this task."""
    mine = [r for r in prior if r.key == s.task.workload_key and r.ok]
    if not mine:
        return
    from tvm.s_tir.meta_schedule.runner import RunnerResult

    ms_records = [r.ms_record(workload) for r in mine]
    for r in ms_records:
        database.commit_tuning_record(r)
    if cost_model is not None:
        cost_model.update(
            s.ctx,
            [r.as_measure_candidate() for r in ms_records],
            [RunnerResult(r.ms_run_secs, None) for r in mine],
        )


def _carry_over(task: Task, priors: Priors, protocol: str) -> list[rec.Record]:
    """Schedules to time on this machine before searching ``task``: its ``CARRY_OVER`` best distinct
    traces measured elsewhere (other machines or thread counts, ``--from`` logs) or under another
    protocol, if it has no record of this machine under ``protocol`` yet (so an interrupted
    carry-over is not repeated on resume); one that has gets the ``--from`` logs' traces it has not
    timed (``_given_untimed``). This machine's older-protocol records come first, then
    other machines' by their own ranking. A task no log holds gets the schedules of its nearest
    relatives instead (``_relatives``), refitted to its extents when timed."""
    local = [r for r in priors.local if r.key == task.workload_key and r.ok]
    if any(r.protocol == protocol for r in local):
        return _given_untimed(task, priors, local)
    elsewhere = [r for r in priors.sources if r.key == task.workload_key and r.ok]
    if not local and not elsewhere and priors.counts.get(task.workload_key, 0) == 0:
        return _relatives(task, priors)
    nearest = sorted(elsewhere, key=lambda r: (class_distance(r.measured_class, priors.here), r.rank))
    return rec.distinct_schedules(sorted(local, key=lambda r: r.rank) + nearest, CARRY_OVER)


def _given_untimed(task: Task, priors: Priors, local: list[rec.Record]) -> list[rec.Record]:
    """A task this machine already timed: the ``--from`` logs' best distinct traces of it not yet
    timed here. Before, ``--from`` was silently ignored for such a task: a single-conv search on this
    host that beat ResNet18's logged layer-3 conv side by side (0.957x, Zen 4) could not reach the
    model's log that way. Timed once: on resume they are the log's own."""
    given = sorted((r for r in priors.given if r.key == task.workload_key and r.ok), key=lambda r: r.rank)
    return rec.distinct_schedules(given, CARRY_OVER, skip=[r.trace for r in local])


def _relatives(task: Task, priors: Priors) -> list[rec.Record]:
    """The best records of the workloads computing ``task``'s op sequence at other extents
    (``traces.op_signature``: another batch size, another conv shape), most alike first
    (``traces.relatives``), two per workload, ``CARRY_OVER`` in all."""
    kin: dict[str, list[rec.Record]] = {}
    for r in priors.local + priors.sources:
        if r.ok and r.key in priors.workloads:
            kin.setdefault(r.key, []).append(r)
    nearest = relatives(task.name, task.flop, {k: priors.workloads[k] for k in kin}, exclude=task.workload_key)
    picked = [r for k in nearest for r in sorted(kin[k], key=lambda r: r.rank)[:2]]
    return picked[:CARRY_OVER]


def rank_correlation(predicted: Any, results: list[Any]) -> float:
    """Spearman correlation of the cost model's scores with measured speed (a failed candidate is
    slowest): 1 when the model ranked the batch exactly as the clock did, ~0 when it guessed."""
    import numpy as np

    speed = [1.0 / float(np.mean(r.run_secs)) if r.run_secs else 0.0 for r in results]
    return spearman(predicted, speed)


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation of two sequences; nan when either is constant or shorter than 2."""
    import numpy as np

    a, b = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _ranks(x: Any) -> Any:
    """Ranks with ties averaged (what Spearman's correlation needs; scipy is not a dependency)."""
    import numpy as np

    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _summarized(result: Any, protocol: str) -> Any:
    """A runner result with its samples as ``records.summarize`` weighs them (MetaSchedule ranks by their mean)."""
    from tvm.s_tir.meta_schedule.runner import RunnerResult

    if result.run_secs is None:
        return result
    return RunnerResult(rec.summarize([float(x) for x in result.run_secs], protocol), result.error_msg)


def _short_error(msg: Any) -> str | None:
    """Last lines of a build/run traceback: the cause, without kilobytes of frames per record."""
    if msg is None:
        return None
    lines = [x for x in str(msg).strip().splitlines() if x.strip()]
    return "\n".join(lines[-3:])[-1000:]


def _measure(
    builder: Any, runner: Any, target: Any, cands: list[Any], state: SearchState, until: float = math.inf
) -> tuple[list[Any], list[dict[str, Any] | None]]:
    """Build then run the candidates, in chunks of ``CHUNK`` when the batch must end ``until``: the
    first chunk always, then as many as the pace of those before them fits by then. Returns
    the results of the candidates measured, a prefix of ``cands`` (a failed build is a failed result),
    and per candidate the RPC server that timed it (``_measure_chunk``)."""
    results: list[Any] = []
    measured_on: list[dict[str, Any] | None] = []
    began, n = state.now(), CHUNK if math.isfinite(until) else len(cands)
    while len(results) < len(cands):
        if results:  # the candidates that fit before ``until`` at this batch's pace so far
            now = state.now()
            n = min(CHUNK, math.floor((until - now) * len(results) / max(now - began, 1e-9)))
            if n < 1:
                break
        chunk_results, chunk_on = _measure_chunk(builder, runner, target, cands[len(results) : len(results) + n], state)
        results += chunk_results
        measured_on += chunk_on
    return results, measured_on


def _measure_chunk(builder: Any, runner: Any, target: Any, cands: list[Any], state: SearchState) -> tuple[list[Any], list[dict[str, Any] | None]]:
    """Build then run candidates; a failed build becomes a failed result for its candidate.

    Also returns, per candidate, the RPC server that timed it (a ``FleetRunner`` notes it by
    artifact path; None when it was timed here or never ran).
    """
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput, RunnerResult

    t = state.now()
    built = builder.build([BuilderInput(c.sch.mod, target) for c in cands])
    t = state.clock("build", t)
    to_run = [(i, b) for i, b in enumerate(built) if b.error_msg is None]
    futures = runner.run([RunnerInput(b.artifact_path, "cpu", cands[i].args_info) for i, b in to_run])
    results: list[Any] = [RunnerResult(None, b.error_msg) if b.error_msg is not None else None for b in built]
    measured_on: list[dict[str, Any] | None] = [None] * len(cands)
    servers = getattr(runner, "measured_on", {})
    for (i, b), fut in zip(to_run, futures, strict=True):
        results[i] = fut.result()
        measured_on[i] = servers.pop(b.artifact_path, None)
        shutil.rmtree(Path(b.artifact_path).parent, ignore_errors=True)
    state.clock("run", t)
    return results, measured_on
