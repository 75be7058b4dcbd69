"""Bad input to every command: one ``error:`` line, exit code 2, no traceback, refused before any work
starts (no model built, lowered, tuned or compiled), nothing written and nothing lost.

Each command runs in this process through ``cli.main``, as the console script does, with the
functions that start work replaced by ones that fail the test. ``tasks`` and ``logs`` have their
own tests (test_foundation, test_logs).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from tunebench import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = f"{ROOT / 'tests/fixtures/tiny.py'}:tiny_conv"
LOG = str(ROOT / "tuning_logs/bert_tiny-avx2.jsonl.gz")  # a real log, read-only here
Run = Callable[..., tuple[int, str, str]]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder of a user's project: a file where a folder is expected, a corrupt log, a web
    app whose ``manifest.json`` is not an artifact's, and an artifact folder with a mistyped manifest."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "corrupt.jsonl").write_text("not a log\n")
    (tmp_path / "corrupt.json").write_text("{")
    (tmp_path / "webapp").mkdir()
    (tmp_path / "webapp" / "manifest.json").write_text('{"name": "my app", "icons": []}')
    (tmp_path / "webapp" / "index.html").write_text("<html></html>")
    (tmp_path / "artifact").mkdir()
    (tmp_path / "artifact" / "model.so").write_bytes(b"\x7fELF")
    manifest = {"format": 1, "tvm": "0.27.0", "target": {}, "needs": [], "inputs": [[[1, 3, 16, 16], "float32"]], "takes": "0"}
    (tmp_path / "artifact" / "manifest.json").write_text(json.dumps({**manifest, "outputs": [0], "out_spec": "", "coverage": "", "served": {}}))
    return tmp_path


@pytest.fixture
def run(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``run(*args)``: ``tunebench ARGS`` in ``project``; returns (exit code, stdout, stderr)."""

    def work(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the bad input was refused")

    for module, name in (("zoo", "get_model"), ("api", "lower_model"), ("search.driver", "tune_tasks"), ("serve.backend", "compile")):
        monkeypatch.setattr(f"tunebench.{module}.{name}", work)

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["tunebench", *args])
        with warnings.catch_warnings(), pytest.raises(SystemExit) as exited:  # main() sets warning filters: undone here
            cli.main()
        out, err = capsys.readouterr()
        return exited.value.code, out, err

    return invoke


BAD = {
    "tune": [
        (["tune", TINY, "--trials", "4", "--batch", "x"], "--batch takes comma-separated batch sizes"),
        (["tune", TINY, "--trials", "x"], "Invalid value for '--trials'"),
        (["tune", TINY, "--trials", "4", "--rpc", "127.0.0.1:9190"], "--rpc and --rpc-key go together"),
        (["tune", TINY], "give a budget"),
        (["tune", TINY, "--timeout", "0"], "--timeout takes seconds"),
        (["tune", TINY, "--trials", "4", "--log", "afile/tiny.jsonl"], "cannot write log 'afile/tiny.jsonl': 'afile' is a file"),
        (["tune", TINY, "--trials", "4", "--from", "missing.jsonl"], "log 'missing.jsonl' does not exist"),
        (["tune", TINY, "--trials", "4", "--protocol", "lukewarm"], "unknown timing protocol 'lukewarm'"),
    ],
    "bench": [
        (["bench", "resnet18", "--batch", "x"], "Invalid value for '--batch'"),
        (["bench", "resnet18", "--log", "missing.jsonl"], "log 'missing.jsonl' does not exist"),
        (["bench", "resnet18", "--log", "corrupt.jsonl"], "is not a tunebench history log"),
        (["bench", "resnet18", "--iters", "0"], "--iters must be at least 1"),
        (["bench", "resnet18", "--warmup", "-1"], "--warmup must be at least 0"),
        (["bench", "resnet18", "--log", LOG, "--json", "afile/bench.json"], "cannot write --json"),
    ],
    "siblings": [
        (["siblings", "resnet18", "--log", "missing.jsonl"], "log 'missing.jsonl' does not exist"),
        (["siblings", "resnet18", "--log", "corrupt.jsonl"], "is not a tunebench history log"),
        (["siblings", "resnet18", "--log", LOG, "--rounds", "0"], "Invalid value for '--rounds'"),
    ],
    "refine": [
        (["refine", "resnet18", "--log", "missing.jsonl"], "log 'missing.jsonl' does not exist"),
        (["refine", "resnet18", "--log", "corrupt.jsonl"], "is not a tunebench history log"),
        (["refine", "resnet18", "--log", LOG, "--sweeps", "0"], "Invalid value for '--sweeps'"),
        (["refine", "resnet18", "--log", LOG, "--timeout", "0"], "--timeout takes seconds, more than 0; got 0"),
    ],
    "plot": [
        (["plot", "missing.jsonl"], "log 'missing.jsonl' does not exist"),
        (["plot", "corrupt.jsonl"], "is not a tunebench history log"),
        (["plot", LOG, "--out", "afile/curve.png"], "cannot write --out"),
        (["plot", LOG, "--bench-json", "corrupt.json"], "no eager median in it"),
    ],
    "apply": [
        (["apply", "resnet18", "--log", LOG, "--runs", "0"], "--runs must be at least 1, got 0"),
        (["apply", "resnet18", "--log", "missing.jsonl"], "log 'missing.jsonl' does not exist"),
        (["apply", "resnet18", "--log", "corrupt.jsonl"], "is not a tunebench history log"),
        (["apply", "resnet18", "--log", LOG, "--fallback", "sometimes"], "fallback 'sometimes' is not one of"),
    ],
    "save": [
        (["save", "resnet18", "out", "--log", "missing.jsonl"], "log 'missing.jsonl' does not exist"),
        (["save", "resnet18", "out", "--log", LOG, "--batch", "x"], "Invalid value for '--batch'"),
        (["save", "resnet18", "webapp", "--log", LOG], "webapp exists and is not a tunebench artifact; not overwriting it (it holds index.html)"),
        (["save", "resnet18", "artifact", "--log", LOG], "field 'takes' is str, not list"),
        (["save", "resnet18", "afile/out", "--log", LOG], "cannot write artifact folder"),
        (["save", "resnet18", "out", "--log", LOG, "--fallback", "sometimes"], "fallback 'sometimes' is not one of"),
    ],
    "fleet": [
        (["fleet", "tracker", "--port", "x"], "Invalid value for '--port'"),
        (["fleet", "server", "--tracker", "nohost", "--key", "k"], "--tracker 'nohost': expected HOST:PORT"),
        (["fleet", "server", "--tracker", "127.0.0.1:9190"], "Missing option '--key'"),
    ],
    "cache": [
        (["cache", "clear", "--dir", "afile"], "cache directory 'afile' is a file, not a folder"),
        (["cache", "show", "--dir", "afile"], "cache directory 'afile' is a file, not a folder"),
        (["cache", "wipe"], "No such command 'wipe'"),
    ],
}


@pytest.mark.parametrize(("args", "message"), [case for cases in BAD.values() for case in cases], ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_bad_input_is_one_error_line_before_any_work(run: Run, project: Path, args: list[str], message: str) -> None:
    before = snapshot(project)
    code, out, err = run(*args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in out + err
    assert snapshot(project) == before, "a refused command wrote or deleted files"


def test_every_command_has_a_bad_input_case() -> None:
    import typer

    commands = set(typer.main.get_command(cli.app).commands)  # type: ignore[attr-defined]
    tested_elsewhere = {"tasks", "logs", "models"}  # test_foundation, test_logs; `models` takes no input
    assert commands - tested_elsewhere == set(BAD), commands


def test_an_unwritable_cache_folder_is_one_error_line_and_loses_nothing(run: Run, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder tunebench may not delete in (faked: the suite may run as root, whom permissions do not stop)."""
    from tunebench.serve.cache import CompileCache, Entry

    key = "e" * 64
    CompileCache().get(key, project / "cache", lambda: Entry("pytorch", 1))
    before = snapshot(project)

    def refuse(path: object, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "unlink", refuse)
    code, _, err = run("cache", "clear", "--dir", "cache")
    assert code == 2 and err.startswith("error: cannot clear the cache in cache: ") and err.count("\n") == 1, err
    assert snapshot(project) == before


def test_warnings_with_brackets_print_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    cli._show_warning(UserWarning("records for [avx512] and [bold]x[/bold] skipped"), UserWarning, "f.py", 1)
    assert capsys.readouterr().err.strip() == "warning: records for [avx512] and [bold]x[/bold] skipped"
