"""Valid taps: a padded conv whose border outputs multiply only the taps inside the image.

TOPI's convs read a zero-padded copy of the input and multiply all kh x kw taps of every output,
the padding's zeros included. At ResNet18's 7x7 images 18% of a 3x3 conv's taps are padding
(4.7% at 56x56); ONNX Runtime and OpenVINO skip them: a padded conv ran 0.83-0.87x the time of
the same work on a pre-padded input at 512x7x7 (``benchmarks/padded_taps.py``, docs/peers.md).

Here each product is guarded by its tap's position, each side's test wrapped in ``likely``, and
every build compiles with ``LoopPartition``'s ``partition_const_loop`` (``build_config``): the
loops over output rows and columns are split into border and interior parts, the interior loses
the guard and the border keeps only its valid taps, in the one loop nest MetaSchedule tiled (the
weights stay where its schedule put them). Without the partition the guard costs 1.05-3x
(a select per tap). The padded copy is still a block of its own, so a schedule of the plain conv
replays on this one (same block names and loops) and MetaSchedule may inline it.

Kernels without a ``likely`` test compile to the same code either way: every best schedule of the
shipped ResNet18, MobileNetV2 and bert_tiny avx512 logs gave identical assembly with and without
the option (AMD EPYC Zen 4, 2026-12-01). A conv without padding has nothing to skip and keeps
TOPI's compute, so its tasks and records are the blocked layout's own.
"""

from __future__ import annotations

from typing import Any

TASK_MARK = "conv2d_NCHWc_taps"  # in the name of every valid-tap conv task (and contains layout.TASK_MARK)
BUILD_CONFIG = {"s_tir.LoopPartition": {"partition_const_loop": True}}


def build_config() -> Any:
    """The current pass context with ``BUILD_CONFIG`` added: what every build of a tuned or served
    kernel runs under (``with build_config(): ...``)."""
    import tvm

    current = tvm.transform.PassContext.current()
    return tvm.transform.PassContext(
        opt_level=current.opt_level,
        required_pass=list(current.required_pass),
        disabled_pass=list(current.disabled_pass),
        instruments=list(current.instruments),
        config={**dict(current.config), **BUILD_CONFIG},
    )


def enter_build_config() -> None:
    """Make ``BUILD_CONFIG`` the context of a build worker for its lifetime (a worker process's
    initializer); TVM's context stack holds the context."""
    build_config().__enter__()


def guarded(product: Any, rows: Any, cols: Any, padding: list[int], size: tuple[int, int], dtype: str) -> Any:
    """``product`` where the tap at padded position (``rows``, ``cols``) lies inside the ``size``
    image, else zero; one ``likely`` test per padded side, so ``LoopPartition`` can split on each."""
    import tvm

    top, left, bottom, right = padding
    h, w = size
    tests = [(top, rows >= top), (bottom, rows < top + h), (left, cols >= left), (right, cols < left + w)]
    inside = [tvm.tirx.likely(test) for pad, test in tests if pad > 0]
    return tvm.tirx.if_then_else(tvm.tirx.all(*inside), product, tvm.tirx.const(0, dtype))


def conv2d_nchwc(data: Any, kernel: Any, strides: list, padding: list[int], dilation: list, data_layout: str, out_layout: str, out_dtype: str) -> Any:
    """TOPI's ``conv2d_NCHWc`` (groups 1) with each product ``guarded``: same blocks, loops and
    reduction order, so its schedules apply here. Without padding it is TOPI's compute itself."""
    from tvm import te, topi
    from tvm.topi.utils import get_const_tuple

    if not any(padding):
        return topi.nn.conv2d_NCHWc(data, kernel, strides, padding, dilation, data_layout, out_layout, out_dtype)
    n, chunks, h, w, ic_bn = get_const_tuple(data.shape)
    oc_chunks, _, kh, kw, _, oc_bn = get_const_tuple(kernel.shape)
    (sh, sw), (dh, dw), (top, left, bottom, right) = [int(s) for s in strides], [int(d) for d in dilation], padding
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    padded = topi.nn.pad(data, [0, 0, top, left, 0], [0, 0, bottom, right, 0], name="data_pad")
    ic, ry, rx = te.reduce_axis((0, chunks * ic_bn), name="ic"), te.reduce_axis((0, kh), name="kh"), te.reduce_axis((0, kw), name="kw")

    def tap(i: Any, c: Any, y: Any, x: Any, k: Any) -> Any:
        row, col = y * sh + ry * dh, x * sw + rx * dw
        product = padded[i, ic // ic_bn, row, col, ic % ic_bn].astype(out_dtype) * kernel[c, ic // ic_bn, ry, rx, ic % ic_bn, k].astype(out_dtype)
        return te.sum(guarded(product, row, col, padding, (h, w), out_dtype), axis=[ic, ry, rx])

    return te.compute((n, oc_chunks, oh, ow, oc_bn), tap, name="conv2d_NCHWc", tag="conv2d_NCHWc")


def in_log(log: Any) -> bool:
    """Whether a ``HistoryLog`` holds valid-tap conv workloads."""
    return any(TASK_MARK in w.task for w in log.workloads.values())
