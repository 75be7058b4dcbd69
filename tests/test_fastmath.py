"""The fast forms of erf/exp/tanh: no libm call left in the lowered kernels, outputs still eager's."""

from __future__ import annotations

import torch

from tunebench import api
from tunebench.serve import build, choose, runtime
from tunebench.zoo import get_model

MLP = "tests/fixtures/tiny.py:tiny_mlp"


def test_nonlinearities_lower_to_polynomials_and_match_eager() -> None:
    module, (x,) = get_model(MLP)
    lowered = api.lower_model(MLP, "avx2")
    kernels = lowered.relax_mod.script()
    # the exact forms call libm once per element, unvectorized; the fast ones are polynomials
    for exact in ("T.erf(", "T.exp(", "T.tanh("):
        assert exact not in kernels, exact
    compiled = runtime.CompiledModel(build.build(lowered.relax_mod, lowered.target), choose.Coverage([]))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-5, atol=1e-5)
