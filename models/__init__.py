"""The tunebench model zoo: plain PyTorch definitions with deterministic, seeded weights.

torchvision does not import beside the pinned torch 2.13.0 CPU build and no weights can be
downloaded here, so the zoo is our own code. Each entry returns ``(model, example_inputs)``
with the model in eval mode. The folder ships inside the wheel as ``tunebench.models`` (see
``pyproject.toml``), so no top-level ``models`` package lands in site-packages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .bert import bert_tiny
from .mobilenet import mobilenet_v2
from .resnet import resnet18, resnet34, resnet50


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: how to build it and the input it is tuned for."""

    name: str
    factory: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    description: str

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Seeded example inputs: token ids for integer inputs, N(0, 1) for floats."""
        gen = torch.Generator().manual_seed(seed)
        if self.input_dtype.is_floating_point:
            return (torch.randn(self.input_shape, generator=gen, dtype=self.input_dtype),)
        return (torch.randint(0, 1000, self.input_shape, generator=gen, dtype=self.input_dtype),)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("resnet18", resnet18, (1, 3, 224, 224), torch.float32, "ResNet-18 (He et al. 2015)"),
        ZooEntry("resnet34", resnet34, (1, 3, 224, 224), torch.float32, "ResNet-34"),
        ZooEntry("resnet50", resnet50, (1, 3, 224, 224), torch.float32, "ResNet-50, bottleneck blocks"),
        ZooEntry("mobilenet_v2", mobilenet_v2, (1, 3, 224, 224), torch.float32, "MobileNetV2"),
        ZooEntry("bert_tiny", bert_tiny, (1, 128), torch.int64, "BERT-style encoder, 2 layers, d=128"),
    )
}

__all__ = ["ZOO", "ZooEntry"]
