"""Measurement settings: how long and how often a candidate is timed, wherever it is timed.

One leaf that the local builder/runner (``measure``) and the RPC fleet (``rpc``) both read, so
neither has to import the other for its configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import TunebenchError
from ..logs.records import PROTOCOLS

# Timing per candidate (``records.PROTOCOLS`` says why two protocols). Warm: ``REPEAT`` samples, each
# at least ``MIN_REPEAT_MS`` of back-to-back calls, so one noisy sample cannot crown a candidate.
# Cold: ``COLD_REPEAT`` single calls, each after flushing every argument but the input from the
# caches; the record keeps every sample and ranks by their median.
REPEAT = 3
MIN_REPEAT_MS = 40
COLD_REPEAT = 15
BUILD_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class MeasureConfig:
    """Where and how candidates are built and timed."""

    workers: int = 2
    protocol: str = "cold"  # records.PROTOCOLS
    repeat: int = REPEAT
    min_repeat_ms: int = MIN_REPEAT_MS
    build_timeout: float = BUILD_TIMEOUT_S
    run_timeout: float = RUN_TIMEOUT_S
    persistent_builder: bool = True
    rpc: str | None = None  # "host:port" of a TVM RPC tracker
    rpc_key: str | None = None
    rpc_allow_public: bool = False  # a tracker outside loopback and the private ranges (``rpc.check_tracker``)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise TunebenchError(f"unknown timing protocol {self.protocol!r}; choose one of: {', '.join(PROTOCOLS)}")


def evaluator_config(cfg: MeasureConfig) -> Any:
    """MetaSchedule's timing settings for ``cfg.protocol``; local and RPC runners time alike."""
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig

    if cfg.protocol == "cold":
        return EvaluatorConfig(number=1, repeat=COLD_REPEAT, min_repeat_ms=0, enable_cpu_cache_flush=True)
    return EvaluatorConfig(number=1, repeat=cfg.repeat, min_repeat_ms=cfg.min_repeat_ms, enable_cpu_cache_flush=False)
