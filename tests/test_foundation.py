"""Issue 2: zoo, targets, lowering, task extraction, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import AVX2_HOSTS, AVX512_HOSTS, ZEN4_FLAGS, Host
from tunebench import api
from tunebench.errors import TunebenchError
from tunebench.serve import build, choose
from tunebench.target import cpu_flags, required_flags, resolve_target
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
    lowered = api.lower_model(model, "avx2", example_inputs=(x,), layout="nchw")
    assert lowered.tasks, "a lowered model has at least one tuning task"
    compiled = build.compile_model(lowered.relax_mod, lowered.target)
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


def test_resnet18_has_22_tasks_in_nchw_and_24_blocked() -> None:
    from tunebench.lowering.frontend import optimize
    from tunebench.lowering.tasks import extract_tasks

    lowered = api.lower_model("resnet18", "avx2", layout="nchw")
    assert len(lowered.tasks) == 22, [t.name for t in lowered.tasks]
    assert sum(t.weight for t in lowered.tasks) >= len(lowered.tasks)
    assert lowered.tasks[0].anchor.startswith("conv2d")
    total_gflop = sum(t.total_flop for t in lowered.tasks) / 1e9
    assert 3.4 < total_gflop < 3.9  # ResNet18 is 1.8 GMAC = 3.6 GFLOP
    # the default blocked layout, from the same imported module (as lower_model makes it): every conv
    # blocked, the 3-channel stem too (its input one channel per block), plus 2 layout changes
    blocked = extract_tasks(optimize(lowered.source, lowered.target, layout="blocked"), lowered.target)
    assert len(blocked) == 24, [t.name for t in blocked]
    anchors = {t.anchor for t in blocked}
    assert "conv2d_NCHWc" in anchors and "conv2d_nchw" not in anchors, anchors
    assert 3.4 < sum(t.total_flop for t in blocked) / 1e9 < 3.9


def test_file_factory_reference(tmp_path: Path) -> None:
    model, inputs = get_model("tests/fixtures/tiny.py:tiny_conv")
    assert isinstance(model, torch.nn.Module) and inputs[0].shape == (1, 3, 16, 16)


def test_targets(fake_host: Callable[[str], Host]) -> None:
    avx2 = resolve_target("avx2", num_cores=2)
    assert avx2.config == {"kind": "llvm", "mcpu": "core-avx2", "num-cores": 2}
    # the real host, whatever it is: every x86 host here has AVX2, and LLVM's name for it must pass the ISA check
    assert resolve_target("avx2").mcpu == "core-avx2"
    assert resolve_target("native").mcpu
    host = fake_host("xeon")
    assert resolve_target("native").mcpu == host.llvm_cpu
    assert resolve_target("avx2").num_cores == host.cores, "num-cores defaults to the physical cores"
    assert resolve_target("avx512").mcpu == "skylake-avx512"
    fake_host("zen4")
    assert resolve_target("avx512").mcpu == "znver4", "AMD Zen gets the AVX-512 CPU model of its own vendor"


@pytest.mark.parametrize("host_name", AVX2_HOSTS)
def test_target_the_cpu_cannot_run_is_refused_before_anything_runs(fake_host: Callable[[str], Host], host_name: str) -> None:
    host = fake_host(host_name)
    avx512 = "znver4" if host.llvm_cpu.startswith("znver") else "skylake-avx512"
    with pytest.raises(TunebenchError, match=rf"'avx512' \(mcpu {avx512}\) needs avx512f, avx512cd.*which this CPU .* lacks"):
        resolve_target("avx512")
    assert resolve_target("avx2").mcpu == "core-avx2"
    assert resolve_target("native").mcpu == host.llvm_cpu  # the host's own CPU model is always runnable


def test_native_leaves_out_the_features_the_host_hides(fake_host: Callable[[str], Host]) -> None:
    # on an emeraldrapids guest without AMX in cpuinfo, `--target native` was refused on its own host (the suite failed there)
    fake_host("emr_guest")
    native = resolve_target("native")
    assert native.mcpu == "emeraldrapids" and native.config["mattr"] == ["-amx-tile", "-amx-int8", "-amx-bf16"]
    assert not native.missing_flags() and "avx512f" in required_flags(native.config)
    fake_host("zen4")
    assert "mattr" not in resolve_target("native").config, "a host with every feature its CPU's name implies gets the name alone"


# Targets outside the presets: the ISA check asks LLVM what the mcpu and mattr enable.
SAPPHIRE_RAPIDS = '{"kind": "llvm", "mcpu": "sapphirerapids"}'
MATTR_AVX512 = '{"kind": "llvm", "mcpu": "x86-64", "mattr": ["+avx512f"]}'
ZNVER4_WITHOUT_AVX512 = '{"kind": "llvm", "mcpu": "znver4", "mattr": ["-avx512f"]}'


@pytest.mark.parametrize(
    ("target", "host_name", "missing"),
    [
        (SAPPHIRE_RAPIDS, "zen3", None),  # anything from avx512f on: not spelled out here
        (SAPPHIRE_RAPIDS, "zen4", ["avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"]),
        (SAPPHIRE_RAPIDS, "xeon", []),
        (MATTR_AVX512, "zen3", ["avx512f"]),  # +avx512f implies avx2, fma and f16c, which Zen 3 has
        (MATTR_AVX512, "zen4", []),
        (ZNVER4_WITHOUT_AVX512, "zen3", []),  # -avx512f takes every AVX-512 extension with it
    ],
    ids=["spr-on-zen3", "spr-on-zen4", "spr-on-xeon", "mattr-on-zen3", "mattr-on-zen4", "minus-mattr-on-zen3"],
)
def test_isa_check_asks_llvm_for_any_mcpu_and_mattr(fake_host: Callable[[str], Host], target: str, host_name: str, missing: list[str] | None) -> None:
    from tunebench.target import missing_flags

    host = fake_host(host_name)
    config = json.loads(target)
    got = missing_flags(config)
    assert got == missing if missing is not None else got[0] == "avx512f"
    assert missing_flags(config, host_flags=host.flags) == got
    if got:
        with pytest.raises(TunebenchError, match=rf"'custom' \(mcpu {config['mcpu']}.*\) needs {got[0]}"):
            resolve_target(target)
    else:
        assert resolve_target(target).config["mcpu"] == config["mcpu"]


def test_llvm_feature_names_map_to_real_cpuinfo_flags() -> None:
    """Every flag the check asks of a Zen 4 is one a real Zen 4's /proc/cpuinfo prints (the table once
    asked for ``avx512vnni``, which cpuinfo spells ``avx512_vnni``, and refused every Zen 4)."""
    from tunebench.target import LLVM_TO_CPUINFO, required_flags

    for mcpu in ("znver4", "skylake-avx512", "core-avx2", "haswell", "znver3"):
        needed = required_flags({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})
        assert {"avx2", "fma"} <= set(needed) and set(needed) <= ZEN4_FLAGS, (mcpu, set(needed) - ZEN4_FLAGS)
    assert "avx512_vnni" in required_flags({"kind": "llvm", "mcpu": "znver4"})
    assert not {"amx-fp16", "avxifma"} & set(LLVM_TO_CPUINFO), "features cpuinfo never lists would refuse correct hosts"
    assert required_flags({"kind": "c"}) == ()
    with pytest.raises(TunebenchError, match="not a valid TVM target"):
        required_flags({"kind": "llvm", "mcpu": "znver4", "mattr": "+avx512f"})  # mattr must be a list


@pytest.mark.parametrize("host_name", AVX512_HOSTS)
def test_target_comes_from_the_log_when_not_given(fake_host: Callable[[str], Host], host_name: str) -> None:
    from tunebench.logs.records import HistoryLog, Record

    def rec(key: str, mcpu: str, ok: bool = True) -> Record:
        target = {"kind": "llvm", "mcpu": mcpu, "num-cores": 8}
        return Record(key, [], [], [1e-3] if ok else None, None if ok else "boom", target, {}, "0.27")

    fake_host(host_name)
    avx512 = resolve_target("avx512", check=False).mcpu
    assert choose.target_for_log(None) == "avx2"
    assert choose.target_for_log(HistoryLog(records=[rec("a", avx512), rec("b", avx512), rec("a", "core-avx2")])) == "avx512"
    # only failed records for avx512: nothing was tuned for it
    assert choose.target_for_log(HistoryLog(records=[rec("a", avx512, ok=False), rec("a", "core-avx2")])) == "avx2"
    # an mcpu no preset names comes back as its JSON target, without the tuning machine's core count
    assert choose.target_for_log(HistoryLog(records=[rec("a", "core-avx2"), rec("a", "haswell"), rec("b", "haswell")])) == '{"kind":"llvm","mcpu":"haswell"}'
    # a host without AVX-512 gets the target it can run, also for an mcpu no preset names
    fake_host("zen3")
    assert choose.target_for_log(HistoryLog(records=[rec("a", avx512), rec("b", avx512), rec("a", "core-avx2")])) == "avx2"
    assert choose.target_for_log(HistoryLog(records=[rec("a", "sapphirerapids"), rec("b", "sapphirerapids"), rec("a", "core-avx2")])) == "avx2"


@pytest.mark.skipif("avx512f" not in cpu_flags(), reason="compiles and runs AVX-512 code: needs a host with AVX-512")
def test_avx512_preset_runs_on_an_avx512_host() -> None:
    """The one test that executes AVX-512 code: the preset passes the check on real AVX-512 hardware and
    its kernels (blocked by 16 lanes) match eager."""
    from tunebench.lowering import layout

    module, (x,) = get_model("tests/fixtures/tiny.py:tiny_conv")
    lowered = api.lower_model(module, "avx512", example_inputs=(x,), layout="blocked")
    assert layout.block(lowered.target) == 16
    compiled = build.compile_model(lowered.relax_mod, lowered.target)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-4)


def test_cli_models_lists_the_zoo() -> None:
    out = run_cli("models")
    assert out.returncode == 0, out.stderr
    for name in zoo_names():
        assert name in out.stdout
    assert "GFLOP" in out.stdout


def test_cli_tasks_prints_task_table() -> None:
    """In-process (the entry point's own checks are the subprocess tests below); resnet18's task counts
    per layout are counted in-process above, so the tiny model shows what the CLI passes on."""
    from typer.testing import CliRunner

    from tunebench.cli import app

    # --layout reaches the lowering
    out = CliRunner().invoke(app, ["tasks", "tests/fixtures/tiny.py:tiny_conv", "--target", "avx2", "--layout", "nchw"])
    assert out.exit_code == 0, out.output
    assert ": 2 tuning tasks" in out.output and "conv2d_nchw" in out.output and "conv2d_NCHWc" not in out.output
    # the default blocked layout: both convs blocked (the 3-channel stem too), plus 2 layout changes
    out = CliRunner().invoke(app, ["tasks", "tests/fixtures/tiny.py:tiny_conv", "--target", "avx2"])
    assert out.exit_code == 0, out.output
    assert ": 4 tuning tasks" in out.output and "conv2d_NCHWc" in out.output
    assert "conv2d_nchw" not in out.output and "total" in out.output


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


@pytest.mark.parametrize(
    ("code", "env", "want"),
    [
        ("import tunebench, torch", {}, "10000 set by tunebench"),  # before libgomp loads: bounded
        ("import torch, tunebench", {}, "None libgomp default"),  # too late to matter: left alone, the backend advises
        ("import tunebench, torch", {"GOMP_SPINCOUNT": "500"}, "500 set by the user"),  # the user's value wins
    ],
)
def test_openmp_spin_is_bounded_only_where_it_can_take_effect(code: str, env: dict[str, str], want: str) -> None:
    import os

    probe = f"{code}; import os; from tunebench.serve.spin import openmp_spin; print(os.environ.get('GOMP_SPINCOUNT'), openmp_spin())"
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "TUNEBENCH_SET_GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", probe], env={**clean, **env}, capture_output=True, text=True, check=True).stdout
    value, how = want.split(" ", 1)
    assert out.startswith(value) and how in out, out
