"""TVM's own log off the terminal: kept in a file beside the tuning log, what a user can act on in one line.

TVM's C++ code logs (``[hh:mm:ss] /project/src/...cc:NN: Warning: ...``) and LLVM complains straight
to the process's stderr, fd 2; MetaSchedule's Python side logs through ``logging``
("tvm.s_tir.meta_schedule"), whose last-resort handler prints to ``sys.stderr``. Most of it a user
cannot act on: every ResNet18 run printed ``apply_custom_rule.cc:64: Warning: Unknown schedule rule
"meta_schedule.pool_max" for target keys ("cpu",)`` (MetaSchedule has no CPU rule for pooling and
schedules it with its generic rules). No switch turns that logging off in the pip wheel, so
``captured`` points fd 2 at a file for the duration of a run: the builder's and runner's popen
workers, started inside it, inherit it. Python's own ``sys.stderr`` stays on the terminal (progress
lines, warnings, tracebacks), and MetaSchedule's loggers write to the same file. Each message that
``ACTIONABLE`` knows becomes one ``TvmWarning`` line (the CLI prints it as one ``warning:`` line).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIX = ".tvm.txt"


class TvmWarning(UserWarning):
    """A message of TVM's own log a user can act on, said in one line."""


# (pattern, one line for the user; {0}, {1} are the pattern's groups). The texts are those TVM 0.27's
# wheel (LLVM 22.1) prints, seen on AMD EPYC Zen 3: a --num-cores above the cores, an mcpu or mattr
# this LLVM does not know (a JSON --target, or a log made with another LLVM).
ACTIONABLE: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"thread affinity cannot be set when the number of workers\s*is larger than the number of available cores"),
        "TVM ran more threads than this machine has cores, so its timings are not this machine's: pass --num-cores at most the physical core count",
    ),
    (
        re.compile(r"Using LLVM (\S+) with `-mcpu=([^`]+)` is not valid"),
        "LLVM {0} in this TVM does not know the CPU '{1}' and generated generic x86-64 code (slow): use a target whose mcpu it knows (avx2, avx512, native)",
    ),
    (
        re.compile(r"'([^']+)' is not a recognized feature for this target"),
        "LLVM in this TVM does not know the CPU feature '{0}' and ignored it: check the target's mattr",
    ),
)


def beside(log_path: str | os.PathLike[str]) -> Path:
    """``tuning_logs/resnet18-avx2.jsonl[.gz]`` -> ``tuning_logs/resnet18-avx2.tvm.txt``."""
    p = Path(log_path)
    return p.with_name(p.name.removesuffix(".gz").removesuffix(".jsonl") + SUFFIX)


def messages(text: str) -> list[str]:
    """Split log text into messages: a message is a line and the indented lines after it (TVM lists
    what it checked that way). Indented lines with no message before them continue one already read."""
    out: list[str] = []
    started = False
    for line in text.splitlines():
        if line and not line[0].isspace():
            out.append(line)
            started = True
        elif started:
            out[-1] += "\n" + line
    return out


def translate(message: str) -> str | None:
    """The one line a user can act on for ``message``, or None when there is nothing to do."""
    for pattern, advice in ACTIONABLE:
        m = pattern.search(message)
        if m:
            return advice.format(*m.groups())
    return None


@dataclass
class Capture:
    """The file a run's TVM log goes to, and what of it has been relayed."""

    path: Path
    messages: int = 0
    said: set[str] = field(default_factory=set)
    _offset: int = 0

    def relay(self) -> None:
        """Warn (``TvmWarning``) once per actionable message written since the last call, whole lines only."""
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        chunk = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(chunk)
        for message in messages(chunk.decode(errors="replace")):
            self.messages += 1
            line = translate(message)
            if line is not None and line not in self.said:
                self.said.add(line)
                warnings.warn(TvmWarning(line), stacklevel=2)

    def relaying(self, reporter: Callable[[str, Any], None] | None) -> Callable[[str, Any], None]:
        """``reporter`` (a search reporter), relaying TVM's new messages first at every event."""

        def report(event: str, state: Any) -> None:
            self.relay()
            if reporter is not None:
                reporter(event, state)

        return report

    def summary(self) -> str:
        """One line for the end of a run: where TVM's messages are ('' when it wrote none)."""
        if not self.messages:
            return ""
        said = f", {len(self.said)} of them said above" if self.said else ""
        return f"TVM's own log: {self.messages} message(s) in {self.path}{said}"


@contextmanager
def captured(path: str | os.PathLike[str]) -> Iterator[Capture]:
    """Send fd 2 (C++, LLVM, worker processes started inside) and MetaSchedule's loggers to ``path``
    (replaced) while keeping Python's ``sys.stderr`` on the terminal; relay what is actionable at the end.
    An empty file is removed."""
    capture = Capture(Path(path))
    capture.path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    file_fd = os.open(capture.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    terminal = os.dup(2)
    python_stderr = sys.stderr
    if _writes_to_fd2(python_stderr):
        sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=python_stderr.encoding, errors=python_stderr.errors, closefd=False)
    os.dup2(file_fd, 2)
    os.close(file_fd)
    handler = logging.FileHandler(capture.path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)s: %(levelname)s: %(message)s", "%H:%M:%S"))
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    ms_logger.addHandler(handler)
    propagate, ms_logger.propagate = ms_logger.propagate, False
    try:
        yield capture
    finally:
        ms_logger.removeHandler(handler)
        ms_logger.propagate = propagate
        handler.close()
        sys.stderr.flush()
        os.dup2(terminal, 2)
        sys.stderr = python_stderr
        os.close(terminal)
        capture.relay()
        if not capture.messages and capture.path.stat().st_size == 0:
            capture.path.unlink()


def _writes_to_fd2(stream: Any) -> bool:
    """Whether ``stream`` is the process's fd 2 (not pytest's capture, not a notebook's own stream)."""
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False
