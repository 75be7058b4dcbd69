"""Model lookup: a zoo name or a user's ``path/to/file.py:factory`` reference, and its example inputs at another batch size.

A factory returns either a module (example inputs must then be given some other way) or
``(module, example_inputs)``; the zoo's entries carry their own example inputs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from .errors import TunebenchError


def zoo() -> dict[str, Any]:
    """The zoo table (name -> ZooEntry). Imports torch, so called only when a model is needed."""
    from tunebench.models import ZOO

    return ZOO


def zoo_names() -> list[str]:
    """Zoo names without importing torch (for error messages and shell completion)."""
    return ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "bert_tiny"]


def get_model(name: str) -> tuple[Any, tuple[Any, ...]]:
    """Return ``(model, example_inputs)`` for a zoo name or a ``file.py:factory`` reference."""
    if ":" in name and name.split(":", 1)[0].endswith(".py"):
        return _load_factory(name)
    entries = zoo()
    if name not in entries:
        raise TunebenchError(f"unknown model {name!r}; known models: {', '.join(entries)}, or path/to/file.py:factory")
    entry = entries[name]
    return entry.factory(), entry.example_inputs()


def _load_factory(ref: str) -> tuple[Any, tuple[Any, ...]]:
    import torch

    path_str, attr = ref.rsplit(":", 1)
    path = Path(path_str)
    if not path.is_file():
        raise TunebenchError(f"model file {path_str!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"tunebench_user_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file: report its failure as one line
        raise TunebenchError(f"importing {path_str} failed: {type(e).__name__}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TunebenchError(f"{path_str} has no callable {attr!r}")
    result = factory()
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        model, inputs = result
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    else:
        raise TunebenchError(f"{ref} must return (model, example_inputs), got {type(result).__name__}")
    return model.eval(), inputs


def with_batch(inputs: tuple[Any, ...], batch: int | None) -> tuple[Any, ...]:
    """The example inputs with batch dimension ``batch``: fresh seeded data, not copies of one row,
    so a kernel that mixes up rows shows in the output check."""
    import torch

    if batch is None or all(x.shape[0] == batch for x in inputs):
        return inputs
    if batch < 1:
        raise TunebenchError(f"--batch must be at least 1, got {batch}")
    gen = torch.Generator().manual_seed(0)
    out = []
    for x in inputs:
        shape = (batch, *x.shape[1:])
        if x.dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen, dtype=x.dtype))
        else:
            out.append(torch.randint(0, int(x.max()) + 1, shape, generator=gen, dtype=x.dtype))
    return tuple(out)
