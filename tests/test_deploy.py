"""Deployable artifacts: saved with the backend's build, served in a fresh process by TVM's runtime alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tunebench
from tunebench.errors import TunebenchError
from tunebench.serve import deploy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/fixtures"))
from partitioned import conv_i0_conv  # noqa: E402
from tiny import tiny_conv  # noqa: E402

CHILD = """
import json, sys
import tunebench, torch
from tunebench.serve import deploy
served = deploy.load({path!r})
x = torch.tensor({x}).reshape({shape})
out = served(x)
import tvm
print(json.dumps({{"out": out.flatten().tolist(), "runtime_only": tvm.base._RUNTIME_ONLY,
                  "compiler_modules": sorted(m for m in ("tvm.relax", "torch._dynamo.eval_frame") if m in sys.modules)}}))
"""


@pytest.fixture
def saved(tiny_log: Path, tmp_path: Path, fresh_serving: None) -> Path:
    """tiny_conv saved with its tuning log (every task tuned, so it runs wholly in TVM)."""
    model, inputs = tiny_conv()
    with tunebench.apply_history_best(tiny_log):
        manifest = tunebench.save(model, inputs, tmp_path / "out" / "tiny.tb")
    assert manifest.coverage.startswith("1/1 subgraphs in TVM, 2/2 tasks tuned")
    assert manifest.inputs == [[[1, 3, 16, 16], "float32"]] and "avx2" in manifest.needs
    return tmp_path / "out" / "tiny.tb"


def test_saved_model_serves_in_a_fresh_runtime_only_process(saved: Path) -> None:
    model, (x,) = tiny_conv()
    code = CHILD.format(path=str(saved), x=x.flatten().tolist(), shape=list(x.shape))
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child["runtime_only"] is True and child["compiler_modules"] == []  # no TVM compiler, no dynamo
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(torch.tensor(child["out"]).reshape(want.shape), want, atol=1e-4, rtol=1e-4)
    assert child["out"] == deploy.load(saved)(x).flatten().tolist()  # the same library in this process


def test_structured_outputs_come_back_in_the_models_structure(tmp_path: Path, fresh_serving: None) -> None:
    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, object]:
            y = self.conv(a)
            return {"y": y, "pair": (torch.relu(y), b * 2)}

    torch.manual_seed(0)
    model, a, b = TwoHeads().eval(), torch.randn(1, 3, 8, 8), torch.randn(5)
    tunebench.save(model, (a, b), tmp_path / "heads", fallback="never")
    got = deploy.load(tmp_path / "heads")(a, b)
    with torch.no_grad():
        want = model(a, b)
    assert set(got) == {"y", "pair"} and isinstance(got["pair"], tuple)
    torch.testing.assert_close(got["y"], want["y"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["pair"][0], want["pair"][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["pair"][1], want["pair"][1])


def test_a_split_model_cannot_be_saved(tmp_path: Path, fresh_serving: None) -> None:
    model, inputs = conv_i0_conv()
    with pytest.raises(TunebenchError, match="only a model served wholly in TVM"):
        tunebench.save(model, inputs, tmp_path / "split", fallback="never")
    assert not (tmp_path / "split").exists()


def test_calls_with_other_shapes_are_refused(saved: Path) -> None:
    served = deploy.load(saved)
    with pytest.raises(TunebenchError, match=r"built for inputs \(\[1, 3, 16, 16\] float32\)"):
        served(torch.randn(2, 3, 16, 16))
    with pytest.raises(TunebenchError, match="built for inputs"):
        served(torch.randn(1, 3, 16, 16, dtype=torch.float64))


def test_a_host_without_the_kernels_isa_is_refused(saved: Path, fake_host) -> None:
    manifest = json.loads((saved / deploy.MANIFEST).read_text())
    manifest["needs"].append("avx512f")  # as an AVX-512 build records it
    (saved / deploy.MANIFEST).write_text(json.dumps(manifest))
    fake_host("zen3")
    with pytest.raises(TunebenchError, match=r"needs avx512f, which this CPU \(fake zen3\) lacks"):
        deploy.load(saved)
    fake_host("zen4")
    assert deploy.load(saved)(torch.randn(1, 3, 16, 16)).shape == (1, 8, 16, 16)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(tvm="0.19.0"), "built with TVM 0.19.0"),
        (lambda m: m.update(format=99), "artifact format 99"),
        (lambda m: m.pop("takes"), "damaged"),
        # mistyped fields: refused when read, not met later inside a call
        (lambda m: m.update(takes="0"), "field 'takes' is str, not list"),
        (lambda m: m.update(takes=[5]), "not lists of indices"),
        (lambda m: m.update(needs=[1]), "'needs' is not a list of strings"),
        (lambda m: m.update(inputs=[[[1, 3, 16, 16], "float99"]]), "'inputs' holds"),
        (lambda m: m.update(outputs=[0, 0]), "'out_spec' has 1 outputs"),
        (lambda m: m.update(out_spec="{not a tree"), "'out_spec' is not an output structure"),
        (lambda m: m.update(format=True), "artifact format True|'format' is bool"),
    ],
)
def test_foreign_or_damaged_manifests_are_clear_errors(saved: Path, change, message: str) -> None:
    manifest = json.loads((saved / deploy.MANIFEST).read_text())
    change(manifest)
    (saved / deploy.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TunebenchError, match=message):
        deploy.load(saved)


def test_saving_replaces_an_artifact_but_no_other_folder(saved: Path, tiny_log: Path) -> None:
    (saved.parent / "notes").mkdir()
    (saved.parent / "notes" / "keep.txt").write_text("mine")
    model, inputs = tiny_conv()
    with tunebench.apply_history_best(tiny_log):
        with pytest.raises(TunebenchError, match="not a tunebench artifact; not overwriting"):
            tunebench.save(model, inputs, saved.parent / "notes")
        tunebench.save(model, inputs, saved)
    assert (saved.parent / "notes" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in saved.parent.iterdir()) == ["notes", "tiny.tb"]  # no temp folder left
    with pytest.raises(TunebenchError, match="not a tunebench artifact"):
        deploy.load(saved.parent / "notes")


def test_save_command(tiny_log: Path, tmp_path: Path, fresh_serving: None) -> None:
    from typer.testing import CliRunner

    from tunebench.cli import app

    tiny = f"{ROOT / 'tests/fixtures/tiny.py'}:tiny_conv"
    done = CliRunner().invoke(app, ["save", tiny, str(tmp_path / "a"), "--log", str(tiny_log), "--target", "avx2", "--batch", "2"])
    assert done.exit_code == 0, done.output
    assert "2x3x16x16 float32" in done.output and "2/2 tasks tuned" in done.output
    assert deploy.load(tmp_path / "a")(torch.randn(2, 3, 16, 16)).shape == (2, 8, 16, 16)


REGISTERED = """
import json, tunebench, tvm
from tvm_ffi import core
keys = sorted(i.type_key for i in map(core._type_index_to_type_info, range(4096)) if i is not None)
print(json.dumps({"keys": keys, "fast": getattr(core._object_type_key_to_index, "answers_from_list", False)}))
"""


@pytest.mark.parametrize("runtime_only", ["1", ""])
def test_fast_type_lookup_registers_the_same_classes(runtime_only: str) -> None:
    """``tunebench.serve.tvm_import`` changes how fast ``import tvm`` is, not what it registers."""
    runs = {}
    for fast in (True, False):
        code = REGISTERED if fast else REGISTERED.replace("import json, tunebench, tvm", "import json, torch, tvm")
        env = {**os.environ, "TVM_USE_RUNTIME_LIB": runtime_only}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[fast] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs[True]["fast"] and not runs[False]["fast"]
    assert runs[True]["keys"] == runs[False]["keys"] and len(runs[True]["keys"]) > 20
