"""Issue 22: when the log covers several lowerings, the one served is the one that runs fastest here, timed, not estimated."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunebench.errors import TunebenchError
from tunebench.lowering import frontend
from tunebench.serve import build, race
from tunebench.serve.choose import LoweringChoice
from tunebench.target import resolve_target

SPEC = resolve_target("avx2", check=False)


class Convs(nn.Module):
    """``depth`` 3x3 convs on a 3-channel image: the same inputs, as much work as asked."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *[nn.Conv2d(16, 16, 3, padding=1) for _ in range(depth - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


def _choice(depth: int, estimate_ms: float) -> LoweringChoice:
    torch.manual_seed(0)
    mod = frontend.optimize(frontend.to_relax(frontend.export(Convs(depth).eval(), (torch.randn(1, 3, 32, 32),))), SPEC)
    return LoweringChoice(mod, "nchw", estimate=(0, 0, 0, 0, estimate_ms / 1e3))


def test_the_lowering_that_runs_fastest_is_served_whatever_the_estimate_said() -> None:
    """The log's estimate ranks the heavy lowering first (its records read faster); timed here,
    the light one wins, and its choice says what it beat. One estimated beyond ``MARGIN`` is not built."""
    heavy, light, far = _choice(12, 1.0), _choice(1, 1.4), _choice(1, 1.0 * race.MARGIN + 0.1)
    built = []

    def build_it(mod: object) -> object:
        built.append(mod)
        return build.build(mod, SPEC)

    won = race.fastest([heavy, light, far], SPEC, None, {}, build_it)
    assert len(built) == 2 and built[0] is heavy.mod and built[1] is light.mod
    assert won.choice is light and won.executable is not None
    assert len(won.seconds) == race.ROUNDS and won.median_ms > 0
    assert "timed here against nchw layout" in str(won.choice), str(won.choice)
    assert heavy.raced == ""


def test_a_lowering_that_fails_to_build_or_is_not_usable_drops_out() -> None:
    heavy, light = _choice(3, 1.0), _choice(1, 1.2)

    def fails_on_heavy(mod: object) -> object:
        if mod is heavy.mod:
            raise TunebenchError("TVM cannot build it: a test's failure")
        return build.build(mod, SPEC)

    won = race.fastest([heavy, light], SPEC, None, {}, fails_on_heavy)
    assert won.choice is light and won.executable is not None and not won.seconds  # one left: nothing to race
    unbuilt = race.fastest([heavy, light], SPEC, None, {}, fails_on_heavy, usable=lambda coverage: False)
    assert unbuilt.choice is heavy and unbuilt.executable is None
    with pytest.raises(TunebenchError, match="a test's failure"):
        race.fastest([heavy], SPEC, None, {}, fails_on_heavy)
