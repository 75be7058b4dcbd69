"""Blocked layout (NCHW[x]c), as NeoCPU made TVM competitive with MKL-DNN on CPUs.

In NCHW the only contiguous axis a conv can vectorize is the image width, which for ResNet's 56,
28, 14 and 7 is no multiple of 16 lanes. In NCHW16c the innermost axis is a block of 16 channels,
and the kernel (OIHW16i16o) keeps 16 output channels contiguous, so every FMA is full width.
Relax's ``ConvertLayout`` rewrites each conv whose output channels divide by the block or half of
it (dense, depthwise, and a stem reading fewer channels than a block: ``conv_layouts``) and carries the blocked
layout through the element-wise ops between them; the weights' and batch-norm constants' layout
transforms are constants, folded once at lowering. Activations change layout only where a
non-convertible op needs NCHW (before the final mean, around a grouped conv that is not depthwise).
Relax has no legalization for a blocked conv; TOPI's ``conv2d_NCHWc`` is the compute, and
``_depthwise_nchwc`` the depthwise one. MobileNetV2 (avx2): 106 kernel calls with 34 layout
transforms and 17 lone clips before the depthwise convs and clips were blocked, 57 with 2 after.

``layout="taps"`` swaps in ``taps.conv2d_nchwc`` for padded convs (the padding's zeros skipped).

Measured here (avx512, cold timing): ResNet18's 64x56x56 3x3 conv reached 767 µs after 128 trials
blocked, against 964 µs after 712 trials in NCHW.
"""

from __future__ import annotations

import functools
from typing import Any

from ..target import TargetSpec, required_flags

LAYOUTS = ("blocked", "nchw", "taps")  # taps: blocked, padded convs multiplying valid taps only (``taps``)
TASK_MARK = "conv2d_NCHWc"  # in the name of every blocked conv task
DEPTHWISE_MARK = "depthwise_conv2d_NCHWc"  # a blocked depthwise conv task (it contains TASK_MARK too)


def block(target: TargetSpec) -> int:
    """Channels per block: one vector of fp32 lanes (16 with AVX-512, 8 with AVX2)."""
    return 16 if "avx512f" in required_flags(target.config) else 8  # LLVM's features of the mcpu (and mattr)


def convert(mod: Any, target: TargetSpec) -> Any:
    """Rewrite convs (and the ops between them) to the target's blocked layout; call under the
    target, then legalize with ``legalize_map`` among the overrides.

    Each conv gets the layouts ``conv_layouts`` picks for its own shape (ConvertLayout's
    ``layout_cb``; one map for all convs would give a depthwise kernel a dense conv's layout).
    Clips on 4-D activations become max/min first: ``relax.clip`` has no layout inference, so each
    ReLU6 would pull the activations back to NCHW and run as a kernel of its own."""
    from tvm import ir, relax

    b = block(target)
    dense = [f"NCHW{b}c", f"OIHW{b}i{b}o"]

    def layouts(call: Any) -> dict[str, list[str]]:
        conv = isinstance(call.op, ir.Op) and call.op.name == "relax.nn.conv2d"
        return {"relax.nn.conv2d": conv_layouts(call, b) if conv else dense}

    return relax.transform.ConvertLayout({}, layouts)(_clips_as_min_max(mod))


def conv_layouts(call: Any, b: int) -> list[str]:
    """[data, kernel, output] layouts of one NCHW conv2d call in blocks of ``b`` channels, or of half
    a block for a side whose channels ``b`` does not divide (``_fit``).

    Dense convs: NCHW{bi}c data with an OIHW{bi}i{bo}o kernel, written NCHW{bo}c. Depthwise convs
    (groups == in == out channels): the same activations with an OIHW1i{bo}o kernel, one input
    channel per output channel (``_depthwise_nchwc``). A dense conv reading fewer channels than any
    block (an image stem): NCHW1c data, which is NCHW reshaped, and output blocked, so it vectorizes
    over output channels and its consumers need no layout transform. Anything else stays NCHW."""
    (_, c, _, _), (o, _, _, _) = ([int(d) for d in a.ty.shape] for a in call.args)
    groups, bi, bo = int(call.attrs.groups), _fit(c, b), _fit(o, b)
    if (call.attrs.data_layout, call.attrs.kernel_layout) != ("NCHW", "OIHW") or bo is None:
        return ["NCHW", "OIHW", "NCHW"]
    if groups == 1 and bi is not None:
        return [f"NCHW{bi}c", f"OIHW{bi}i{bo}o", f"NCHW{bo}c"]
    if groups == c == o:
        return [f"NCHW{bo}c", f"OIHW1i{bo}o", f"NCHW{bo}c"]
    if groups == 1 and c < b:
        return ["NCHW1c", f"OIHW1i{bo}o", f"NCHW{bo}c"]
    return ["NCHW", "OIHW", "NCHW"]


def _fit(channels: int, b: int) -> int | None:
    """The block for ``channels``: ``b``, else half of it where that is still 8 fp32 lanes (an AVX2
    vector), else None (NCHW).

    MobileNetV2's 24-channel layers under AVX-512: in NCHW they cost a layout transform on each side
    (4 transforms, 14% of the model's tuned estimate, and the NCHW convs ran at 155-195 GFLOP/s
    against 200-230 blocked, AMD EPYC Zen 4). Blocked by 8 they need none: a conv reads its input
    block and writes its own (TOPI's ``conv2d_NCHWc`` takes any pair). Zen 4 issues 512-bit FMAs as
    two 256-bit halves, so an 8-lane block loses no peak there. AVX2's half block (4 lanes) would."""
    return next((k for k in (b, b // 2) if k >= 8 and channels % k == 0), None)


def _clips_as_min_max(mod: Any) -> Any:
    """``clip(x, lo, hi)`` on 4-D tensors as ``minimum(maximum(x, lo), hi)``: element-wise ops that
    ConvertLayout keeps blocked and FuseOps fuses into the conv before them, as for ReLU."""
    from tvm import ir, relax

    @relax.expr_functor.mutator
    class ClipAsMinMax(relax.PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not (isinstance(call.op, ir.Op) and call.op.name == "relax.clip" and call.args[0].ty.ndim == 4):
                return call
            x, lo, hi = call.args
            dtype = x.ty.dtype
            low = relax.op.maximum(x, relax.const(float(lo.value), dtype))
            return relax.op.minimum(low, relax.const(float(hi.value), dtype))

    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = ClipAsMinMax().visit_expr(func)
    return mod


def legalize_map(taps: bool = False) -> dict[str, Any]:
    """A ``LegalizeOps`` map that lowers the blocked convs with TOPI's ``conv2d_NCHWc`` and the
    blocked depthwise convs with ``_depthwise_nchwc``; with ``taps``, each padded one multiplying
    only the taps inside the image (``taps``)."""
    return {"relax.nn.conv2d": functools.partial(_legalize, taps=taps)}


def _legalize(bb: Any, call: Any, taps: bool) -> Any:
    from tvm import topi
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

    from . import taps as valid

    a = call.attrs
    if a.data_layout == "NCHW":  # not convertible: the default legalization
        return _nn_conv2d(bb, call)
    out_dtype = str(a.out_dtype) or call.ty.dtype
    padding = [int(p) for p in a.padding]
    mark = valid.TASK_MARK if taps and any(padding) else TASK_MARK
    if int(a.groups) > 1:  # depthwise (conv_layouts blocks no other grouped conv)
        return bb.call_te(
            functools.partial(_depthwise_nchwc, taps=taps),
            call.args[0],
            call.args[1],
            list(a.strides),
            padding,
            list(a.dilation),
            out_dtype,
            primfunc_name_hint=mark.replace("conv2d", "depthwise_conv2d"),
        )
    return bb.call_te(
        valid.conv2d_nchwc if taps else topi.nn.conv2d_NCHWc,
        call.args[0],
        call.args[1],
        list(a.strides),
        padding,
        list(a.dilation),
        a.data_layout,
        a.out_layout,
        out_dtype,
        primfunc_name_hint=mark,
    )


def _depthwise_nchwc(data: Any, kernel: Any, strides: list, padding: list[int], dilation: list, out_dtype: str, taps: bool = False) -> Any:
    """Depthwise conv, NCHW{b}c data and OIHW1i{b}o kernel: each output channel sums its own input
    channel's window, so the innermost block of ``b`` channels is one vector throughout; with
    ``taps``, over the taps inside the image only (``taps.guarded``).

    TVM 0.27's ``topi.nn.depthwise_conv2d_NCHWc`` is a declaration only (its x86 compute went with
    AutoTVM); this is the compute it had, for a channel multiplier of 1."""
    from tvm import te, topi
    from tvm.topi.utils import get_const_tuple

    from .taps import guarded

    n, chunks, h, w, b = get_const_tuple(data.shape)
    _, _, kh, kw, _, _ = get_const_tuple(kernel.shape)
    (sh, sw), (dh, dw), (top, left, bottom, right) = [int(s) for s in strides], [int(d) for d in dilation], padding
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    padded = topi.nn.pad(data, [0, 0, top, left, 0], [0, 0, bottom, right, 0], name="data_pad") if any(padding) else data
    ry, rx = te.reduce_axis((0, kh), name="ry"), te.reduce_axis((0, kw), name="rx")

    def tap(i: Any, c: Any, y: Any, x: Any, k: Any) -> Any:
        row, col = y * sh + ry * dh, x * sw + rx * dw
        product = padded[i, c, row, col, k].astype(out_dtype) * kernel[c, 0, ry, rx, 0, k].astype(out_dtype)
        return te.sum(guarded(product, row, col, padding, (h, w), out_dtype) if taps and any(padding) else product, axis=[ry, rx])

    return te.compute((n, chunks, oh, ow, b), tap, name="depthwise_conv2d_NCHWc")


def in_log(log: Any) -> bool:
    """Whether a ``HistoryLog`` holds blocked-layout workloads."""
    return any(TASK_MARK in w.task for w in log.workloads.values())
