"""Batch norm folded into the conv before it: new weights and a bias, computed once at lowering.

An inference batch norm after a conv is a per-channel affine map, so it can live in the conv's
weights (scaled per output channel) and one bias, as ONNX Runtime and OpenVINO run it. Left to
``DecomposeOpsForInference``, it becomes a subtract, a divide, a multiply and an add on every output
element of the conv's epilogue. Relax's ``FoldBatchnormToConv2D`` leaves the new weights as an
expression over constants, which ``ConvertLayout`` crashes on (TVM 0.27); here they are computed in
numpy (in float64, then cast to the weights' dtype) and bound as constants. A lowering choice, not
a fixed step (``frontend.optimize(fold=True)``, ``tune --fold-bn``): from the same log it served
MobileNetV2 faster and ResNet18 slower (``benchmarks/bn_fold.py``, docs/peers.md), so serving folds
when the log's records say the folded tasks are faster (``serve.choose``).
"""

from __future__ import annotations

import re
from typing import Any

# a fused conv task whose epilogue starts with a bias add not followed by a decomposed batch norm's
# subtract: the conv of a folded batch norm (or a conv with its own bias and no batch norm)
_FOLDED_TASK = re.compile(r"conv2d(?:_NCHWc(?:_taps)?)?\d*+_add\d*+(?!_subtract)")


def fold_batch_norms(mod: Any) -> Any:
    """A copy of ``mod`` with every ``batch_norm(conv2d(x, W) [+ b])[0]`` of constant ``W``, ``b``
    and statistics (NCHW, OIHW) replaced by ``conv2d(x, W') + b'``."""
    from tvm import relax
    from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, rewrite_call, wildcard

    data, weight, conv_bias = wildcard(), is_const(), is_const()
    conv = is_op("relax.nn.conv2d")(data, weight)
    biased = is_op("relax.add")(conv, conv_bias | is_op("relax.reshape")(conv_bias, wildcard()))  # torch's conv bias
    stats = [is_const() for _ in range(4)]  # gamma, beta, moving mean, moving variance
    norm = is_op("relax.nn.batch_norm")(conv | biased, *stats)
    pattern = TupleGetItemPattern(norm, 0)

    def rewrite(expr: Any, matched: Any) -> Any:
        call = matched[conv]
        b = _channel_bias(matched[biased], matched[conv_bias]) if biased in matched else None
        folded = _folded(call.attrs, matched[norm].attrs, matched[weight].value.numpy(), b, [matched[s].value.numpy() for s in stats])
        if folded is None:
            return expr
        w, bias = folded
        return relax.op.add(relax.Call(call.op, [matched[data], relax.const(w)], call.attrs), relax.const(bias))

    mod = mod.clone()  # a caller lowers the same imported module folded and not (``choose``)
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = rewrite_call(pattern, rewrite, func)
    return mod


def folded_or_none(mod: Any) -> Any | None:
    """``fold_batch_norms(mod)``, or None when no batch norm of ``mod`` folds (the folded lowering
    would be the unfolded one). Callers lower the module returned rather than fold again."""
    import tvm_ffi

    folded = fold_batch_norms(mod)
    return None if tvm_ffi.structural_equal(folded, mod) else folded


def in_log(log: Any) -> set[str]:
    """The conv layouts (``layout.LAYOUTS``) of which a ``HistoryLog`` holds folded conv workloads:
    a bias add right after the conv, as folded batch norms leave them (a model without batch norms
    never gets the folded lowering anyway: ``folded_or_none``)."""
    from . import layout, taps

    def conv_layout(task: str) -> str:
        return "taps" if taps.TASK_MARK in task else "blocked" if layout.TASK_MARK in task else "nchw"

    return {conv_layout(w.task) for w in log.workloads.values() if _FOLDED_TASK.search(w.task)}


def _channel_bias(add: Any, const: Any) -> Any:
    """The conv bias added by ``add`` as one value per channel, or an empty array when it broadcasts
    otherwise (then nothing folds)."""
    import numpy as np

    shape = [int(d) for d in add.args[1].ty.shape]
    channel_only = len(shape) <= 4 and all(d == 1 for i, d in enumerate(shape) if i != len(shape) - 3)
    return const.value.numpy().reshape(-1) if channel_only and len(shape) >= 3 else np.empty(0)


def _folded(conv_attrs: Any, bn_attrs: Any, weight: Any, conv_bias: Any, stats: list[Any]) -> tuple[Any, Any] | None:
    """(scaled weights, bias shaped (1, C, 1, 1)) for an NCHW/OIHW conv (its own bias, if any, one
    value per output channel) normalized over channels, else None (the batch norm is then
    decomposed as before)."""
    import numpy as np

    layouts = (conv_attrs.data_layout, conv_attrs.kernel_layout, conv_attrs.out_layout or conv_attrs.data_layout)
    channels = weight.shape[0]
    if layouts != ("NCHW", "OIHW", "NCHW") or int(bn_attrs.axis) != 1:
        return None
    if conv_bias is not None and conv_bias.size != channels:
        return None
    gamma, beta, mean, var = (s.astype(np.float64) for s in stats)
    if conv_bias is not None:
        mean = mean - conv_bias.astype(np.float64).reshape(-1)
    scale = (gamma if bn_attrs.scale else np.ones_like(gamma)) / np.sqrt(var + float(bn_attrs.epsilon))
    shift = (beta if bn_attrs.center else np.zeros_like(beta)) - mean * scale
    w = (weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(weight.dtype)
    return w, shift.reshape(1, -1, 1, 1).astype(weight.dtype)
