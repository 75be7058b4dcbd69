"""Approximate nonlinearities: erf, exp and tanh as vectorizable polynomials instead of libm calls.

Measured on bert_tiny (AMD EPYC Zen 4, 2 cores): the exact GELU's ``erf`` lowers to a scalar libm
call per element, and its two fused tasks took 0.87 ms of a 1.8 ms forward (PyTorch's whole
forward: 1.2 ms). TOPI's ``fast_erf``/``fast_exp``/``fast_tanh`` are the polynomial forms TVM's
own ``FastMathTransform`` uses; against ``torch.nn.functional.gelu`` the GELU below differs by at
most 1.2e-6 (inputs N(0, 4^2)), far inside the 1e-3 that serving's outputs are checked against.
"""

from __future__ import annotations

import math
from typing import Any


def _gelu(bb: Any, call: Any) -> Any:
    """GELU(x) = x/2 (1 + erf(x / sqrt 2)), with TOPI's fast erf."""
    from tvm import topi

    def compute(x: Any) -> Any:
        return topi.multiply(topi.multiply(x, 0.5), topi.add(topi.fast_erf(topi.multiply(x, 1 / math.sqrt(2))), 1.0))

    return bb.call_te(compute, call.args[0], primfunc_name_hint="gelu")


def legalize_map() -> dict[str, Any]:
    """``LegalizeOps`` overrides for ops that the library legalizes with their exact nonlinearity."""
    return {"relax.nn.gelu": _gelu}


def transform(mod: Any) -> Any:
    """Softmax, exp, erf and tanh of a Relax module in their fast forms (GELU goes by ``legalize_map``)."""
    from tvm import relax

    return relax.transform.FastMathTransform()(mod)
