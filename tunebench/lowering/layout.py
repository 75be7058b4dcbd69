"""Blocked layout (NCHW[x]c), as NeoCPU made TVM competitive with MKL-DNN on CPUs.

In NCHW the only contiguous axis a conv can vectorize is the image width, which for ResNet's 56,
28, 14 and 7 is no multiple of 16 lanes. In NCHW16c the innermost axis is a block of 16 channels,
and the kernel (OIHW16i16o) keeps 16 output channels contiguous, so every FMA is full width.
Relax's ``ConvertLayout`` rewrites each conv whose channels divide by the block (the 3-channel stem
stays NCHW) and carries the blocked layout through the element-wise ops between them; the
weights' and batch-norm constants' layout transforms are constants, folded once at lowering.
Activations change layout only where a non-convertible op needs NCHW (around max-pool, before the
final mean). Relax has no legalization for a blocked conv; TOPI's ``conv2d_NCHWc`` is the compute.

Measured here (avx512, cold timing): ResNet18's 64x56x56 3x3 conv reached 767 µs after 128 trials
blocked, against 964 µs after 712 trials in NCHW.
"""

from __future__ import annotations

from typing import Any

from ..target import TargetSpec, required_flags

LAYOUTS = ("blocked", "nchw")
TASK_MARK = "conv2d_NCHWc"  # in the name of every blocked conv task


def block(target: TargetSpec) -> int:
    """Channels per block: one vector of fp32 lanes (16 with AVX-512, 8 with AVX2)."""
    return 16 if "avx512f" in required_flags(target.config) else 8  # LLVM's features of the mcpu (and mattr)


def convert(mod: Any, target: TargetSpec) -> Any:
    """Rewrite convs (and the ops between them) to the target's blocked layout; call under the
    target, then legalize with ``legalize_map`` among the overrides."""
    from tvm import relax

    b = block(target)
    return relax.transform.ConvertLayout({"relax.nn.conv2d": [f"NCHW{b}c", f"OIHW{b}i{b}o"]})(mod)


def legalize_map() -> dict[str, Any]:
    """A ``LegalizeOps`` map that lowers the blocked convs with TOPI's ``conv2d_NCHWc``."""
    return {"relax.nn.conv2d": _legalize}


def _legalize(bb: Any, call: Any) -> Any:
    from tvm import topi
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

    a = call.attrs
    if a.data_layout == "NCHW":  # not convertible: the default legalization
        return _nn_conv2d(bb, call)
    return bb.call_te(
        topi.nn.conv2d_NCHWc,
        call.args[0],
        call.args[1],
        list(a.strides),
        [int(p) for p in a.padding],
        list(a.dilation),
        a.data_layout,
        a.out_layout,
        str(a.out_dtype) or call.struct_info.dtype,
        primfunc_name_hint=TASK_MARK,
    )


def in_log(log: Any) -> bool:
    """Whether a ``HistoryLog`` holds blocked-layout workloads."""
    return any(TASK_MARK in w.task for w in log.workloads.values())
