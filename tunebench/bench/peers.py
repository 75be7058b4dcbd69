"""Peers: the runtimes a user would pick instead of tunebench (ONNX Runtime, OpenVINO), made callable.

tunebench is worth its tuning only if the tuned model beats what a user gets from these two on the
same CPU, so the bench times them beside eager and tunebench. Each peer runs the model as
``torch.onnx.export`` writes it (the TorchScript exporter, opset 17: the path that exported every
zoo model), on the same inputs and with the same thread count, in fp32:

- ONNX Runtime, CPU provider, ``intra_op_num_threads`` = threads, all graph optimizations.
- OpenVINO on "CPU" with ``INFERENCE_PRECISION_HINT=f32``: on AMX (and AVX-512-BF16) hosts its
  default is bf16, which is not the same contest; ``PERFORMANCE_HINT=LATENCY``, threads pinned.

Both are optional (``pip install -e '.[peers]'``); a missing one is a skipped column, never an error.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import TunebenchError

ORT, OPENVINO = "onnxruntime", "openvino"
PEERS = (ORT, OPENVINO)
INSTALL_HINT = "pip install -e '.[peers]' (onnxruntime, openvino, onnx)"
OPSET = 17
# ONNX Runtime's worker threads spin after a parallel region by default (kOrtSessionOptionsConfigAllowIntraOpSpinning
# = "1"), which steals one of the two cores from whatever column runs next in an interleaved bench.
ORT_SPIN_KEY = "session.intra_op.allow_spinning"


def version(peer: str) -> str | None:
    """The installed version of a peer's package, None when it is not installed."""
    try:
        return importlib.metadata.version(peer)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing(peer: str) -> str:
    """Why ``peer`` cannot run here ("" when it can): the one line the bench shows instead of its column."""
    if peer not in PEERS:
        raise TunebenchError(f"unknown peer {peer!r}; choose from: {', '.join(PEERS)}")
    needs = [p for p in (peer, "onnx") if version(p) is None]
    return f"{', '.join(needs)} not installed: {INSTALL_HINT}" if needs else ""


def export_onnx(module: Any, inputs: tuple[Any, ...], path: str | Path) -> Path:
    """The model as ONNX (eval mode, no grad), written to ``path``; one-line error if export fails."""
    import torch

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad():
            torch.onnx.export(module.eval(), tuple(inputs), str(out), opset_version=OPSET, dynamo=False)
    except Exception as e:  # torch's exporter raises many types for unsupported ops
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TunebenchError(f"torch.onnx.export cannot export the model: {type(e).__name__}: {first}") from e
    return out


def runner(peer: str, onnx_path: Path, inputs: tuple[Any, ...], threads: int, spin: bool = True) -> Callable[[], list[Any]]:
    """A no-argument callable running ``peer`` on ``inputs`` and returning its outputs as torch tensors.

    ``spin=False`` stops ONNX Runtime's threads spinning after each run (OpenVINO's do not spin).
    """
    arrays = [x.detach().numpy() for x in inputs]
    call = _ort(onnx_path, arrays, threads, spin) if peer == ORT else _openvino(onnx_path, arrays, threads)
    import torch

    return lambda: [torch.from_numpy(a) for a in call()]


def settings(peer: str, threads: int, spin: bool = True) -> dict[str, Any]:
    """The options a peer runs with, as the bench JSON records them."""
    if peer == ORT:
        return {"provider": "CPUExecutionProvider", "intra_op_num_threads": threads, "inter_op_num_threads": 1, ORT_SPIN_KEY: "1" if spin else "0"}
    return {"device": "CPU", **openvino_config(threads)}


def _ort(path: Path, arrays: list[Any], threads: int, spin: bool) -> Callable[[], list[Any]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry(ORT_SPIN_KEY, "1" if spin else "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=True)}
    return lambda: session.run(None, feed)


def openvino_config(threads: int) -> dict[str, str]:
    """The properties OpenVINO compiles with here: fp32 pinned (AMX hosts default to bf16), latency mode, ``threads``."""
    return {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads)}


def _openvino(path: Path, arrays: list[Any], threads: int) -> Callable[[], list[Any]]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", openvino_config(threads))
    request = compiled.create_infer_request()
    outputs = compiled.outputs

    def call() -> list[Any]:
        result = request.infer(arrays)
        return [result[o].copy() for o in outputs]

    return call
