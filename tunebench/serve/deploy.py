"""Deployable artifacts: a compiled model saved as a folder, then served by TVM's runtime alone.

A server restarting on the ``torch.compile`` path pays, before its first output, for dynamo's
trace and TVM's compiler import even when the disk cache holds the build: 4.77 s for ResNet18 on
a 2-vCPU Zen 4 (``benchmarks/warm_start.py``), of which dynamo's own first compile is 2 s. An
artifact keeps only what serving needs: the built library (weights inside), the input
signature, how the library's outputs make the model's output, the ISA its kernels use and the
TVM that built it. ``load`` needs neither dynamo nor TVM's compiler: with
``TVM_USE_RUNTIME_LIB=1`` a process loads only TVM's 3 MB runtime library.

Only a model the backend serves wholly in TVM (one subgraph, no operator left in PyTorch) can be
saved, since an artifact holds no PyTorch code. Its weights are constants in the library: a model
whose weights change is saved again.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils import _pytree as pytree

from ..errors import TunebenchError
from ..files import sync_folder, temp_path

FORMAT = 1
MANIFEST = "manifest.json"
LIBRARY = "model.so"


@dataclass(frozen=True)
class Manifest:
    """What ``load`` checks and needs besides the library."""

    format: int
    tvm: str  # the runtime must be the TVM that built the library
    target: dict[str, Any]
    needs: list[str]  # cpuinfo flags the kernels may use: a host without one would die of SIGILL
    inputs: list[list[Any]]  # [shape, dtype] of each input the model takes
    takes: list[int]  # the inputs the library takes, in its order
    outputs: list[int]  # each flat model output as an index into the library's outputs
    out_spec: str  # the model output's pytree structure (torch.utils._pytree.treespec_dumps)
    coverage: str  # as the backend reported it when saved
    served: dict[str, Any]  # the same, as ``backend.Served``'s fields (for ``tunebench bench --saved``)


def save(model: torch.nn.Module, example_inputs: tuple[Any, ...], path: str | os.PathLike[str], **options: Any) -> Manifest:
    """Compile ``model`` for ``example_inputs`` ahead of time (``tunebench.compile``, same options and
    active ``apply_history_best`` block) and write its artifact to the folder ``path``."""
    from ..target import required_flags
    from .backend import compile, served
    from .cache import library_file
    from .plan import of_split

    check_destination(path)
    graph = compile(model, *example_inputs, **options).last
    assert graph is not None and graph.config is not None
    subs = graph.subgraphs
    if len(subs) != 1 or subs[0].runner != "tvm":
        why = "; ".join(f"{s.name}: {s.reason}" for s in subs if s.reason)
        raise TunebenchError(
            f"only a model served wholly in TVM can be saved; this one has {graph.coverage()}{f' ({why})' if why else ''}. "
            "Tune its missing tasks, pass fallback='never', or serve it with torch.compile"
        )
    plan = of_split(graph.module, subs[0].cache_key, graph.module.get_submodule(subs[0].name).dynamic)
    library = library_file(subs[0].cache_key, graph.config.cache_dir)
    if plan is None or not library.is_file():
        raise TunebenchError("the build of this model is not one library in the compile cache (a cache that refused writes?); cannot save it")
    with torch.no_grad():
        leaves, spec = pytree.tree_flatten(model(*example_inputs))
    manifest = Manifest(
        FORMAT,
        _tvm_version(),
        graph.config.target.config,
        list(required_flags(graph.config.target.config)),
        [[list(x.shape), str(x.dtype).removeprefix("torch.")] for x in example_inputs],
        plan.inputs,
        plan.outputs,
        pytree.treespec_dumps(spec),
        graph.coverage(),
        asdict(served([graph])),
    )
    if len(leaves) != len(plan.outputs):
        raise TunebenchError(f"the model returns {len(leaves)} tensors but its graph {len(plan.outputs)}; cannot save it")
    _write(Path(path), library, manifest)
    return manifest


def _tvm_version() -> str:
    import tvm

    return str(tvm.__version__)


def check_destination(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, a folder ``save`` may not replace: anything but nothing, an empty folder
    or a readable tunebench artifact (a web app's ``manifest.json`` is not one), or one it cannot write."""
    from ..preflight import writable

    folder = writable(path, "artifact folder", folder=True)
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    others = sorted(set(os.listdir(folder)) - {MANIFEST, LIBRARY})
    if others:
        raise TunebenchError(f"{folder} exists and is not a tunebench artifact; not overwriting it (it holds {', '.join(others[:3])})")
    try:
        read_manifest(folder)
    except TunebenchError as e:
        raise TunebenchError(f"{folder} exists and is not a tunebench artifact; not overwriting it ({e})") from None


def _write(folder: Path, library: Path, manifest: Manifest) -> None:
    """Fill a temp folder, then swap it in by renames: a crash never leaves half an artifact at
    ``folder`` (at worst the old one under a hidden ``.old`` name beside it)."""
    tmp = temp_path(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(library, tmp / LIBRARY)
    (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=1) + "\n")
    sync_folder(tmp)  # its two files' names reach the disk before the folder is swapped in
    old = temp_path(folder, "old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    sync_folder(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The artifact's manifest, or a TunebenchError saying what is wrong with the folder."""
    file = Path(path) / MANIFEST
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise TunebenchError(f"{path} is not a tunebench artifact (no {MANIFEST}); write one with tunebench.save or `tunebench save`") from None
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: garbage nested deeper than json parses
        raise TunebenchError(f"cannot read {file}: {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else None
        raise TunebenchError(f"{file}: artifact format {got!r}, this tunebench reads format {FORMAT}; save the model again")
    try:
        return _checked(raw)
    except (TypeError, ValueError) as e:
        raise TunebenchError(f"{file} is damaged ({e}); save the model again") from None


# The JSON type of each manifest field; ``_checked`` looks inside the lists.
_FIELD_TYPES: dict[str, type] = {
    "format": int,
    "tvm": str,
    "target": dict,
    "needs": list,
    "inputs": list,
    "takes": list,
    "outputs": list,
    "out_spec": str,
    "coverage": str,
    "served": dict,
}


def _checked(raw: dict[str, Any]) -> Manifest:
    """The manifest if every field has its type and the fields agree (input dtypes torch knows,
    indices in range, as many outputs as the output structure has leaves); else TypeError or
    ValueError saying which field is wrong, so a damaged file fails here, not inside a call."""
    names = {f.name for f in fields(Manifest)}
    if set(raw) != names:
        raise ValueError(f"fields {sorted(names - set(raw))} missing, {sorted(set(raw) - names)} unknown")
    for name, kind in _FIELD_TYPES.items():
        if not isinstance(raw[name], kind) or isinstance(raw[name], bool):
            raise TypeError(f"field {name!r} is {type(raw[name]).__name__}, not {kind.__name__}")
    if not all(isinstance(flag, str) for flag in raw["needs"]):
        raise TypeError("field 'needs' is not a list of strings")
    for item in raw["inputs"]:
        shape, dtype = item if isinstance(item, list) and len(item) == 2 else (None, None)
        if not (isinstance(shape, list) and all(_index(n) for n in shape) and isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype)):
            raise ValueError(f"field 'inputs' holds {item!r}, not [shape, dtype]")
    if not all(_index(i) and i < len(raw["inputs"]) for i in raw["takes"]) or not all(_index(i) for i in raw["outputs"]):
        raise ValueError("fields 'takes' and 'outputs' are not lists of indices")
    try:
        leaves = pytree.treespec_loads(raw["out_spec"]).num_leaves
    except Exception as e:  # torch raises what its JSON and pytree code meet: this is a file, so any of it means damaged
        raise ValueError(f"field 'out_spec' is not an output structure ({type(e).__name__})") from None
    if leaves != len(raw["outputs"]):
        raise ValueError(f"field 'out_spec' has {leaves} outputs, field 'outputs' {len(raw['outputs'])}")
    return Manifest(**raw)


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class Deployed:
    """A saved model loaded for serving: called like the model, with tensors of the saved shapes."""

    def __init__(self, manifest: Manifest, library: Any, num_threads: int | None) -> None:
        from .runtime import PlannedGraph, TvmSubgraph

        self.manifest = manifest
        self._graph = PlannedGraph(TvmSubgraph(library, manifest.takes, True, num_threads), manifest.outputs)
        self._spec = pytree.treespec_loads(manifest.out_spec)
        self._signature = [(tuple(shape), getattr(torch, dtype)) for shape, dtype in manifest.inputs]

    def __call__(self, *inputs: torch.Tensor) -> Any:
        got = [(tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__ for x in inputs]
        if got != self._signature:
            want = ", ".join(f"{list(s)} {str(d).removeprefix('torch.')}" for s, d in self._signature)
            raise TunebenchError(f"this artifact was built for inputs ({want}); got {got}. Save the model for these shapes")
        return pytree.tree_unflatten(list(self._graph(*inputs)), self._spec)

    def __repr__(self) -> str:
        return f"Deployed({self.manifest.coverage}; target {json.dumps(self.manifest.target)})"


def load(path: str | os.PathLike[str], num_threads: int | None = None) -> Deployed:
    """Load the artifact at ``path`` for serving, after checking this host and TVM can run it.

    ``num_threads``: TVM's threads per call (default: ``torch.get_num_threads()``).
    """
    from ..target import cpu_model, lacking

    manifest = read_manifest(path)
    missing = lacking(manifest.needs)
    if missing:
        built_for = manifest.target.get("mcpu", "a CPU")
        raise TunebenchError(f"{path} was built for {built_for} and needs {', '.join(missing)}, which this CPU ({cpu_model()}) lacks")
    import tvm

    if manifest.tvm != tvm.__version__:
        raise TunebenchError(f"{path} was built with TVM {manifest.tvm}; this process has TVM {tvm.__version__}. Save the model again")
    return Deployed(manifest, tvm.runtime.load_module(str(Path(path) / LIBRARY)), num_threads)
