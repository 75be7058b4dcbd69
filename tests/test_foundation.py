"""Issue 2: zoo, targets, lowering, task extraction, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tunebench import api, dispatch
from tunebench.errors import TunebenchError
from tunebench.target import resolve_target
from tunebench.zoo import get_model, zoo, zoo_names

ROOT = Path(__file__).resolve().parents[1]
TUNEBENCH = [sys.executable, "-m", "tunebench.cli"]

# Small inputs: untuned Relax kernels are naive loops, full-size inputs take seconds per call.
SMALL_INPUTS = {
    "resnet18": torch.randn(1, 3, 32, 32),
    "resnet34": torch.randn(1, 3, 32, 32),
    "resnet50": torch.randn(1, 3, 32, 32),
    "mobilenet_v2": torch.randn(1, 3, 32, 32),
    "bert_tiny": torch.randint(0, 1000, (1, 16)),
}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TUNEBENCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_zoo_names_match_zoo() -> None:
    assert zoo_names() == list(zoo())


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_model_lowers_and_matches_eager_untuned(name: str) -> None:
    model, _ = get_model(name)
    x = SMALL_INPUTS[name]
    lowered = api.lower_model(model, "avx2", example_inputs=(x,))
    assert lowered.tasks, "a lowered model has at least one tuning task"
    compiled = dispatch.compile_model(lowered.relax_mod, lowered.target)
    assert not compiled.coverage.applied
    with torch.no_grad():
        expected = model(x)
    got = compiled(x)
    assert got.shape == expected.shape
    # fp32 summation order differs between oneDNN and TVM loops; scale the bound to the output's size
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4 * max(1.0, scale))


def test_zoo_weights_are_deterministic() -> None:
    a, (x,) = get_model("resnet18")
    b, _ = get_model("resnet18")
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_resnet18_has_about_22_tasks() -> None:
    lowered = api.lower_model("resnet18", "avx2")
    assert 20 <= len(lowered.tasks) <= 24
    assert sum(t.weight for t in lowered.tasks) >= len(lowered.tasks)
    assert lowered.tasks[0].anchor.startswith("conv2d")
    total_gflop = sum(t.total_flop for t in lowered.tasks) / 1e9
    assert 3.4 < total_gflop < 3.9  # ResNet18 is 1.8 GMAC = 3.6 GFLOP


def test_file_factory_reference(tmp_path: Path) -> None:
    model, inputs = get_model("tests/fixtures/tiny.py:tiny_conv")
    assert isinstance(model, torch.nn.Module) and inputs[0].shape == (1, 3, 16, 16)


def test_targets() -> None:
    avx2 = resolve_target("avx2", num_cores=2)
    assert avx2.config == {"kind": "llvm", "mcpu": "core-avx2", "num-cores": 2}
    assert resolve_target("native").mcpu
    assert resolve_target("avx2").num_cores >= 1


def test_target_the_cpu_cannot_run_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import tunebench.target as target_mod

    monkeypatch.setattr(target_mod, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma", "f16c", "bmi1", "bmi2"}))
    with pytest.raises(TunebenchError, match=r"needs avx512f.*which this CPU .* lacks"):
        resolve_target("avx512")
    assert resolve_target("avx2").mcpu == "core-avx2"


def test_target_comes_from_the_log_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    import tunebench.target as target_mod
    from tunebench.records import HistoryLog, Record

    def rec(key: str, mcpu: str, ok: bool = True) -> Record:
        target = {"kind": "llvm", "mcpu": mcpu, "num-cores": 8}
        return Record(key, [], [], [1e-3] if ok else None, None if ok else "boom", target, {}, "0.27")

    avx512 = resolve_target("avx512", check=False).mcpu
    assert dispatch.target_for_log(None) == "avx2"
    assert dispatch.target_for_log(HistoryLog(records=[rec("a", avx512), rec("b", avx512), rec("a", "core-avx2")])) == "avx512"
    # only failed records for avx512: nothing was tuned for it
    assert dispatch.target_for_log(HistoryLog(records=[rec("a", avx512, ok=False), rec("a", "core-avx2")])) == "avx2"
    # an mcpu no preset names comes back as its JSON target, without the tuning machine's core count
    assert dispatch.target_for_log(HistoryLog(records=[rec("a", "core-avx2"), rec("a", "haswell"), rec("b", "haswell")])) == '{"kind":"llvm","mcpu":"haswell"}'
    # a host without AVX-512 gets the target it can run
    monkeypatch.setattr(target_mod, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma", "f16c", "bmi1", "bmi2"}))
    assert dispatch.target_for_log(HistoryLog(records=[rec("a", avx512), rec("b", avx512), rec("a", "core-avx2")])) == "avx2"


def test_cli_models_lists_the_zoo() -> None:
    out = run_cli("models")
    assert out.returncode == 0, out.stderr
    for name in zoo_names():
        assert name in out.stdout
    assert "GFLOP" in out.stdout


def test_cli_tasks_prints_task_table() -> None:
    out = run_cli("tasks", "resnet18", "--target", "avx2", "--layout", "nchw")
    assert out.returncode == 0, out.stderr
    assert "22 tuning tasks" in out.stdout
    assert "conv2d_nchw" in out.stdout and "total" in out.stdout
    # the default blocked layout: every conv but the 3-channel stem blocked, plus 2 layout changes
    out = run_cli("tasks", "resnet18", "--target", "avx2")
    assert out.returncode == 0, out.stderr
    assert "24 tuning tasks" in out.stdout and "conv2d_NCHWc" in out.stdout


UNCAPTURABLE = """
import torch

class DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:          # control flow on a tensor value: torch.export cannot capture it
            return x * 2
        return x - 1

def factory():
    return DataDependent(), (torch.randn(2, 2),)
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tasks", "resnet99"], "unknown model 'resnet99'; known models: resnet18"),
        (["tasks", "no/such/file.py:f"], "model file 'no/such/file.py' does not exist"),
        (["tasks", "resnet18", "--target", "avx9"], "unknown target 'avx9'"),
        (["tasks", "tests/fixtures/tiny.py:nothing"], "has no callable 'nothing'"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(args: list[str], message: str) -> None:
    out = run_cli(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert out.stderr.strip().count("\n") == 0, out.stderr


def test_uncapturable_model_names_the_construct(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(textwrap.dedent(UNCAPTURABLE))
    out = run_cli("tasks", f"{path}:factory")
    assert out.returncode == 2
    assert "torch.export cannot capture the model" in out.stderr
    assert "data-dependent" in out.stderr.lower() or "control flow" in out.stderr.lower(), out.stderr
    assert "Traceback" not in out.stderr


def test_help_does_not_import_torch_or_tvm() -> None:
    code = "import sys, tunebench.cli; assert 'torch' not in sys.modules and 'tvm' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
