"""Lowering: a PyTorch model and example inputs to a fused Relax IRModule ready for tuning.

The same function produces the module that tasks are extracted from and the module that tuning
records are applied to: records match by the structural hash of each fused TIR function, so any
difference between the two lowerings would silently miss every record. The path is the one
measured to apply records (see README): torch.export, Relax frontend with the weights bound as
constants (so constant folding precomputes weight transposes once instead of per call),
inference decompositions, fast forms of erf/exp/tanh (``fastmath``), legalization, constant kernels
folded once each (``constants``), then the "zero" pipeline (fold what is left, FuseOps, FuseTIR).
Batch norms stay in the conv epilogues unless ``fold`` folds them into the conv weights first
(``batchnorm``): folded, MobileNetV2 served 13% faster and ResNet18 5-19% slower from the same log
(docs/peers.md), so folding is a lowering the log's records choose (``serve.choose``), as the layout is.
``meta_schedule.relax_integration.compile_relax`` is not used: it fuses again and misses records.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from ..errors import TunebenchError
from ..target import TargetSpec


def export(model: Any, example_inputs: tuple[Any, ...]) -> Any:
    """torch.export the model in eval mode, turning capture failures into one-line errors naming the
    construct; the model's own train/eval flags are restored afterwards."""
    import logging

    import torch

    _copy_leaf_specs_by_treespec_leaf()

    torch_log = logging.getLogger("torch")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # export failures also log graph dumps; the error line says it
    # captured in inference mode (batch norm with running statistics), the user's module left in its own mode
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad():
            return torch.export.export(model.eval(), tuple(example_inputs))
    except Exception as e:  # torch raises many types here (Unsupported, UserError, RuntimeError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TunebenchError(f"torch.export cannot capture the model: {type(e).__name__}: {first}") from e
    finally:
        for m, training in modes:
            m.training = training
        torch_log.setLevel(level)


@functools.cache
def _copy_leaf_specs_by_treespec_leaf() -> None:
    """Make copies of pytree leaf specs through ``treespec_leaf()``, torch's non-deprecated constructor.

    An exported program's input and output specs end in leaf specs, and ``run_decompositions``
    (ours in ``partition``, and the Relax frontend's) deep-copies them. A copy made the default way
    calls ``LeafSpec.__new__``, which torch 2.13 deprecates: one ``FutureWarning: isinstance(treespec,
    LeafSpec) is deprecated`` per decomposition, printed on every run that splits a graph. All leaf
    specs are equal (torch hands out one shared instance), so the copy is that instance.
    """
    import copyreg

    from torch.utils import _pytree as pytree

    copyreg.pickle(pytree.LeafSpec, lambda _: (pytree.treespec_leaf, ()))


def to_relax(exported: Any) -> Any:
    """Exported program -> Relax IRModule with weights bound as constants."""
    from tvm.relax.frontend.torch import from_exported_program

    try:
        return from_exported_program(exported, keep_params_as_input=False)
    except Exception as e:  # the frontend asserts on unsupported ops with assorted types
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TunebenchError(f"the Relax torch frontend cannot lower the model: {msg}") from e


def optimize(mod: Any, target: TargetSpec, winograd: Collection[Any] = (), layout: str = "nchw", fold: bool = False) -> Any:
    """Decompose for inference and fuse under the target: the module tasks come from.

    ``layout="blocked"`` runs the convs in the target's NCHW[x]c layout (``layout.convert``), and
    "taps" too, each padded conv multiplying only the taps inside the image (``taps``).
    Otherwise convs whose shapes are in ``winograd`` (``winograd.ConvSig``) are lowered as Winograd
    and the rest by the default legalization, so an empty collection gives the direct-conv module.
    ``fold`` folds each batch norm after a conv into the conv's weights and a bias first.
    """
    from tvm import relax

    from . import fastmath
    from .batchnorm import fold_batch_norms
    from .constants import fold_constants
    from .layout import LAYOUTS, convert
    from .layout import legalize_map as blocked_map
    from .winograd import legalize_map as winograd_map

    if layout not in LAYOUTS:
        raise TunebenchError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    with target.tvm():
        mod = relax.transform.DecomposeOpsForInference()(fold_batch_norms(mod) if fold else mod)
        mod = fastmath.transform(relax.transform.CanonicalizeBindings()(mod))
        legalize = fastmath.legalize_map()
        if layout in ("blocked", "taps"):
            mod = convert(mod, target)
            legalize |= blocked_map(taps=layout == "taps")
        elif winograd:
            legalize |= winograd_map(winograd)
        mod = relax.transform.LegalizeOps(customize_legalize_map=legalize)(mod)
        return relax.get_pipeline("zero")(fold_constants(mod))  # before FoldConstant, which builds a kernel per call


def lower(model: Any, example_inputs: tuple[Any, ...], target: TargetSpec, layout: str = "nchw", fold: bool = False) -> tuple[Any, Any]:
    """Model -> (Relax IRModule as imported, fused IRModule with direct convs in ``layout``, batch
    norms folded with ``fold``).

    The imported module is kept so that ``choose`` can lower it again another way (the other
    layout, Winograd convs, batch norms folded or not) when the log says that way is faster.
    """
    source = to_relax(export(model, example_inputs))
    return source, optimize(source, target, layout=layout, fold=fold)
