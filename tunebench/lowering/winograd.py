"""Winograd F(4x4, 3x3): a second implementation of 3x3 stride-1 convolutions that competes with
the direct one, per convolution shape, on measured time.

Winograd trades multiplications for transforms: for ResNet18's 3x3 convs the tuned kernel does
about 40% of the direct FLOP. Whether that wins depends on the shape and on how well each is tuned,
so both are tuned (``tunebench tune --winograd``) and ``choose`` serves, for each conv shape, the
implementation whose tasks the log says are faster.

The compute is TOPI's (``_conv2d_winograd_nchw_impl`` with a pre-computed kernel), whose blocks carry
the schedule-rule names MetaSchedule's CPU Winograd rules are registered under. The kernel
transform is done once, in numpy, at lowering time (the weights are constants), so it never runs per call.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

TILE = 4  # output tile m of F(m x m, 3 x 3); alpha = m + 2 input points per tile side
TASK_MARK = "conv2d_winograd"  # name hint of the Winograd PrimFunc; fused task names contain it


@dataclass(frozen=True, order=True)
class ConvSig:
    """Shapes that identify a convolution: input, weight (OIHW) and output."""

    data: tuple[int, ...]
    weight: tuple[int, ...]
    out: tuple[int, ...]

    def __str__(self) -> str:
        _, ci, h, w = self.data
        return f"{ci}x{h}x{w}->{self.out[1]}x{self.out[2]}x{self.out[3]}"

    def packed_weight(self) -> tuple[int, ...]:
        """Shape of the transformed kernel the Winograd compute reads: (alpha, alpha, CI, CO)."""
        alpha = TILE + 2
        return (alpha, alpha, self.weight[1], self.weight[0])


def _shape(ty: Any) -> tuple[int, ...] | None:
    shape = getattr(ty, "shape", None)
    try:
        return tuple(int(x) for x in shape) if shape is not None else None
    except (TypeError, ValueError):  # symbolic dimensions: not a static-shape conv
        return None


def signature(call: Any) -> ConvSig | None:
    """The conv's shapes if Winograd can compute it: NCHW/OIHW fp32, 3x3, stride 1, no dilation,
    one group, static shapes and a constant weight (so the kernel transform folds at lowering)."""
    import tvm

    a = call.attrs
    data, weight = call.args
    if not isinstance(weight, tvm.ir.expr.Constant) or str(weight.value.dtype) != "float32":
        return None
    if (a.data_layout, a.kernel_layout, a.out_layout, int(a.groups)) not in (("NCHW", "OIHW", "NCHW", 1), ("NCHW", "OIHW", "", 1)):
        return None
    if [int(s) for s in a.strides] != [1, 1] or [int(d) for d in a.dilation] != [1, 1]:
        return None
    shapes = _shape(data.ty), tuple(int(x) for x in weight.value.shape), _shape(call.ty)
    if shapes[0] is None or shapes[2] is None or shapes[1][2:] != (3, 3):
        return None
    return ConvSig(*shapes)  # type: ignore[arg-type]


def signatures(relax_mod: Any) -> list[ConvSig]:
    """Distinct Winograd-eligible conv shapes of an (unlegalized) Relax module."""
    import tvm
    from tvm import relax

    found: set[ConvSig] = set()
    conv2d = tvm.ir.Op.get("relax.nn.conv2d")

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(conv2d):
            sig = signature(expr)
            if sig is not None:
                found.add(sig)

    for func in relax_mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sorted(found)


def transformed_weight(weight: Any, tile: int = TILE) -> Any:
    """U = G W G^T per (out, in) channel pair, laid out (alpha, alpha, CI, CO); float64 inside."""
    import numpy as np
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    _, _, g = _cook_toom_convolution(_interpolation_points(tile + 1), tile, 3)
    return np.einsum("ek,oikl,nl->enio", g, weight.astype(np.float64), g).astype(weight.dtype)


def legalize_map(selected: Collection[ConvSig]) -> dict[str, Any]:
    """A ``LegalizeOps`` map that lowers the convs whose shapes are in ``selected`` as Winograd."""
    from tvm import relax
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d
    from tvm.topi.nn.conv2d import _conv2d_winograd_nchw_impl

    def compute(data: Any, packed: Any, padding: list[int]) -> Any:
        return _conv2d_winograd_nchw_impl(data, packed, 1, padding, 1, "float32", TILE, pre_computed=True)

    def legalize(bb: Any, call: Any) -> Any:
        sig = signature(call)
        if sig is None or sig not in selected:
            return _nn_conv2d(bb, call)
        packed = relax.const(transformed_weight(call.args[1].value.numpy()))
        return bb.call_te(compute, call.args[0], packed, [int(p) for p in call.attrs.padding], primfunc_name_hint=TASK_MARK)

    return {"relax.nn.conv2d": legalize}


def in_log(log: Any) -> bool:
    """Whether a ``HistoryLog`` holds Winograd workloads (their task names carry ``TASK_MARK``)."""
    return any(TASK_MARK in w.task for w in log.workloads.values())


def task_signature(task_mod: Any, sigs: Iterable[ConvSig]) -> tuple[ConvSig, str] | None:
    """Which eligible conv a fused task computes, and how (``direct`` or ``winograd``).

    Matched by the shapes among the task's parameters: input, output, and the weight (OIHW for the
    direct conv, the packed (alpha, alpha, CI, CO) kernel for Winograd).
    """
    func = next(iter(task_mod.functions.values()))
    shapes = {tuple(int(x) for x in p.shape) for p in func.params if getattr(p, "shape", None) is not None}
    for sig in sigs:
        impl = implementation(shapes, sig)
        if impl is not None:
            return sig, impl
    return None


def implementation(shapes: Collection[tuple[int, ...]], sig: ConvSig) -> str | None:
    """How a task whose parameters have ``shapes`` computes ``sig``: ``winograd``, ``direct``, or None (it does not)."""
    if not {sig.data, sig.out} <= set(shapes):
        return None
    if sig.packed_weight() in shapes:
        return "winograd"
    return "direct" if sig.weight in shapes else None
