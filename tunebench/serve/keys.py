"""Compile-cache keys: what a build, or a remembered split, depends on, hashed in one place.

A key covers the graph's code, its inputs' shapes and dtypes, the weights it binds (by content:
a library bakes them in), the serving config, and the versions of everything that builds: TVM's,
PyTorch's and tunebench's own source (``cache.code_version``), so a library from older code is
never served as the new code's. ``kind`` keeps a subgraph's build key (``backend``) and a whole
graph's plan key (``plan``) apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

from .cache import code_version


def key(kind: str, code: str, inputs: str, config_text: str, weights: str) -> str:
    """A SHA-256 hex digest (``cache.owned_name`` names files by it); ``weights`` is ``weights_digest``'s."""
    import tvm

    text = "|".join((kind, code, inputs, config_text, weights, tvm.__version__, torch.__version__, code_version()))
    return hashlib.sha256(text.encode()).hexdigest()


def weights_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """The named tensors by content (the name keeps two orders of the same tensors apart)."""
    h = hashlib.sha256()
    for name, t in named:
        h.update(f"|{name}|".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """A tensor's contents as bytes to hash."""
    return t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().data
