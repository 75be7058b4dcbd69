"""Racing lowerings: of the ways to lower a model the log covers, build the best few and serve the one that runs fastest here.

``choose`` ranks lowerings by the log's estimate, each task's fastest record summed. Between two
lowerings tuned apart that ranking misleads: records timed in another session (this kind of host
drifts 30%), or picked from more trials (the best of more noisy samples reads faster), make one
look faster than it runs. MobileNetV2's unfolded lowering was estimated at 7.27 ms and served 9.50;
the folded one, estimated at 7.77, served 8.25 (AMD EPYC Zen 3). So when the log covers several
lowerings, the best ``RACERS`` by estimate are built and called on the same random inputs in
alternated rounds, and the one with the lowest median is served; the others' builds are dropped.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import TunebenchError
from ..logs.records import HistoryLog, Record
from ..target import TargetSpec
from .build import apply_records
from .choose import Coverage, LoweringChoice

RACERS = 3  # lowerings built and timed at most: each build costs seconds to a minute
MARGIN = 1.5  # a lowering estimated this much slower than the first is not built: estimates erred by 13-30% here
ROUNDS = 6  # alternated rounds; the median round decides
CALLS = 5  # calls per round and lowering


@dataclass
class Entrant:
    """One lowering, scheduled by the log and built."""

    choice: LoweringChoice
    coverage: Coverage
    executable: Any
    seconds: list[float] = field(default_factory=list)  # per round: mean seconds per call

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3


def fastest(
    options: list[LoweringChoice],
    target: TargetSpec,
    log: HistoryLog | None,
    best: dict[str, Record],
    build: Callable[[Any], Any],
    usable: Callable[[Coverage], bool] = lambda coverage: True,
) -> Entrant:
    """The first of ``options`` (``choose.lowering_options``, best estimate first) scheduled and built
    with ``build``, or, when the log covers more than one (every task with a record or stand-in), the
    fastest of the first ``RACERS`` covered within ``MARGIN`` of the first's estimate, timed here. A
    lowering whose applied records are not ``usable`` is not built, and one TVM fails to build drops
    out; when none is left, the first comes back unbuilt (``executable`` None) if none was usable,
    else its build error is raised."""
    covered = [o for o in options if o.estimate[0] == 0 and o.estimate[-1] <= MARGIN * options[0].estimate[-1]][:RACERS]
    scheduled = [(choice, *apply_records(choice.mod, target, log, best)) for choice in (covered if len(covered) > 1 else options[:1])]
    entrants, errors = [], []
    for choice, mod, coverage in scheduled:
        if usable(coverage):
            try:
                entrants.append(Entrant(choice, coverage, build(mod)))
            except TunebenchError as e:
                errors.append(e)
    if not entrants:
        if errors:
            raise errors[0]
        return Entrant(scheduled[0][0], scheduled[0][2], None)
    return entrants[0] if len(entrants) == 1 else race(entrants, target)


def race(entrants: list[Entrant], target: TargetSpec) -> Entrant:
    """Call each entrant's build on the same random inputs, in rounds whose order alternates; the
    lowest median round wins, and its choice says what it beat (``LoweringChoice.raced``)."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from .runtime import use_threads

    use_threads(target.num_cores)
    mains = [VirtualMachine(e.executable, tvm.cpu())["main"] for e in entrants]
    args = random_inputs(entrants[0].choice.mod)  # every lowering of a model takes the model's inputs
    for main in mains:
        main(*args)  # first call: the VM's allocations and the pages of the weights
    for r in range(ROUNDS):
        order = list(zip(entrants, mains, strict=True))
        for e, main in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            for _ in range(CALLS):
                main(*args)
            e.seconds.append((time.perf_counter() - t) / CALLS)
    winner = min(entrants, key=lambda e: e.median_ms)
    others = ", ".join(f"{e.choice} {e.median_ms:.2f} ms" for e in entrants if e is not winner)
    winner.choice.raced = f"{winner.median_ms:.2f} ms timed here against {others}"
    return winner


def random_inputs(mod: Any) -> list[Any]:
    """TVM tensors of random values for ``mod``'s ``main`` parameters (static shapes)."""
    import numpy as np
    import tvm

    rng = np.random.default_rng(0)
    out = []
    for p in mod["main"].params:
        shape, dtype = [int(d) for d in p.ty.shape], str(p.ty.dtype)
        values = rng.standard_normal(shape) if dtype.startswith("float") else rng.integers(0, 2, shape)
        out.append(tvm.runtime.tensor(values.astype(dtype)))
    return out
