"""A model lowered for one target: its Relax module(s) and the tuning tasks in them, per input shape.

What search tunes and ``logs show --model`` counts: the whole model as one Relax module where the
frontend converts it, else the TVM partitions it is served as (``partition``), each at every batch
size asked for, their tasks merged (``tasks.merge_tasks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..target import TargetSpec, resolve_target


class Way(NamedTuple):
    """How the convs are lowered: their layout, Winograd tasks beside the direct ones (NCHW), batch norms folded."""

    layout: str
    winograd: bool = False
    fold: bool = False


@dataclass
class Lowering:
    """One Relax module tasks come from: the whole model, or one TVM partition of it, at one input shape."""

    name: str  # "model", or the partition's submodule in the serving graph (tvm_0...)
    source: Any  # as imported, before legalization and fusion: ``choose`` lowers it again other ways
    relax_mod: Any  # fused, direct convs in the model's layout
    tasks: list[Any]
    example_inputs: tuple[Any, ...]  # the model's inputs it was lowered at


@dataclass
class LoweredModel:
    """A model lowered for one target: its Relax module(s) and the union of their tuning tasks.

    A model the Relax frontend converts whole has one lowering per input shape. One with ops it
    cannot convert is lowered as served: one lowering per TVM partition (and shape), ``pytorch_ops``
    saying what stays in PyTorch. ``relax_mod`` and ``source`` are the whole model's, for code that builds it
    as one module.
    """

    name: str
    target: TargetSpec
    tasks: list[Any]
    example_inputs: tuple[Any, ...]  # at the first batch size lowered
    model: Any
    layout: str = "nchw"  # layout.LAYOUTS
    lowerings: list[Lowering] = field(default_factory=list)
    pytorch_ops: list[Any] = field(default_factory=list)  # partition.PytorchOp

    @property
    def relax_mod(self) -> Any:
        return self.whole().relax_mod

    @property
    def source(self) -> Any:
        return self.whole().source

    def whole(self) -> Lowering:
        """The whole-model lowering, or an error saying why there is none."""
        from ..errors import TunebenchError

        if self.pytorch_ops:
            ops = "; ".join(map(str, self.pytorch_ops))
            raise TunebenchError(
                f"{self.name} has ops TVM cannot lower ({ops}), so it has no whole-model module: serve it with "
                'torch.compile(model, backend="tunebench"), which runs those ops in PyTorch and the rest in TVM'
            )
        if len(self.lowerings) != 1:
            raise TunebenchError(f"{self.name} was lowered at {len(self.lowerings)} input shapes; lower it at one for a whole-model module")
        return self.lowerings[0]


def lower_model(
    model: str | Any,
    target: str | TargetSpec = "avx2",
    example_inputs: tuple[Any, ...] | None = None,
    num_cores: int | None = None,
    winograd: bool = False,
    layout: str = "blocked",
    batch: list[int] | None = None,
    served: bool = False,
    fold_bn: bool = False,
) -> LoweredModel:
    """Lower a zoo name, ``file.py:factory`` reference or ``nn.Module`` and extract its tasks.

    ``layout="blocked"`` lowers the convs in NCHW[x]c (``tunebench.lowering.layout``), the faster choice
    measured here; "nchw" is what logs tuned before it hold. ``winograd`` (NCHW only) adds the
    Winograd tasks of every eligible 3x3 conv to the direct ones, so a search tunes both
    implementations and serving can pick the faster per conv shape. ``fold_bn`` folds batch norms
    into the convs before them (``batchnorm``): serving folds when the log's folded tasks are faster.

    ``batch`` lowers the model at each of these batch sizes (default: its example inputs' own) and
    merges their tasks, weights summed: one search then tunes for every shape, by its share.
    A model with ops the Relax frontend cannot convert is lowered partition by partition, as the
    ``tunebench`` torch.compile backend serves it. ``served`` lowers the graph dynamo captures even
    when the module converts whole (``partition.as_served``: the tasks served, exactly).
    """
    from ..errors import TunebenchError
    from ..zoo import with_batch
    from .tasks import merge_tasks

    spec = resolve_target(target, num_cores)
    name, module, inputs = _resolve_model(model, example_inputs)
    if winograd and layout != "nchw":
        raise TunebenchError("Winograd convs compete in the NCHW layout only: use --layout nchw with --winograd")
    if winograd and fold_bn:
        raise TunebenchError("Winograd convs compete with unfolded batch norms only: --fold-bn or --winograd, not both")
    lowerings: list[Lowering] = []
    pytorch_ops: dict[tuple[str, str], Any] = {}  # one entry per op and reason, over every shape
    for shape in [with_batch(inputs, b) for b in dict.fromkeys(batch)] if batch else [inputs]:
        parts, ops = _lower_shape(module, shape, spec, Way(layout, winograd, fold_bn), served)
        lowerings += parts
        pytorch_ops.update({(op.op, op.reason): op for op in ops})
    tasks = merge_tasks(part.tasks for part in lowerings)
    return LoweredModel(name, spec, tasks, lowerings[0].example_inputs, module, layout, lowerings, list(pytorch_ops.values()))


def _resolve_model(model: str | Any, example_inputs: tuple[Any, ...] | None) -> tuple[str, Any, tuple[Any, ...]]:
    """Name, module and example inputs of a zoo name, ``file.py:factory`` reference or ``nn.Module``."""
    from ..zoo import get_model

    if isinstance(model, str):
        module, inputs = get_model(model)
        return model, module, example_inputs or inputs
    if example_inputs is None:
        raise TypeError("example_inputs are required when passing an nn.Module")
    return type(model).__name__, model, tuple(example_inputs)


def _lower_shape(module: Any, inputs: tuple[Any, ...], spec: TargetSpec, way: Way, served: bool) -> tuple[list[Lowering], list[Any]]:
    """The model at one input shape: lowered whole if the Relax frontend converts every op, else
    partition by partition; with the ops that stay in PyTorch. ``served``: the partitions of the
    graph dynamo captures, exactly what the ``torch.compile`` backend serves."""
    from ..errors import TunebenchError
    from .frontend import lower

    if served:
        return _lower_served(module, inputs, spec, way)
    try:
        source, relax_mod = lower(module, inputs, spec, way.layout, way.fold)
    except TunebenchError as whole_error:
        return _lower_partitions(module, inputs, spec, way, whole_error)
    return [_lowering("model", source, relax_mod, inputs, spec, way)], []


def _lower_partitions(
    module: Any, inputs: tuple[Any, ...], spec: TargetSpec, way: Way, whole_error: Exception
) -> tuple[list[Lowering], list[Any]]:
    """A model the whole-model lowering failed on, lowered as the backend serves it: each TVM
    partition on its own (so the tasks tuned are the served subgraphs'), with the ops that stay in
    PyTorch (``partition.PytorchOp``). If no op is left to PyTorch, ``whole_error`` was about something
    else and is raised."""
    from ..errors import TunebenchError
    from .partition import partition, pytorch_ops

    split = partition(module, inputs)
    ops = pytorch_ops(split.module)
    if not ops:
        raise whole_error
    if not split.partitions:
        raise TunebenchError(f"no op of the model can be lowered by TVM (in PyTorch: {'; '.join(map(str, ops))}): nothing to tune") from whole_error
    return _partition_lowerings(split, inputs, spec, way), ops


def _partition_lowerings(split: Any, inputs: tuple[Any, ...], spec: TargetSpec, way: Way) -> list[Lowering]:
    """Each TVM partition of ``split`` (``partition.Partitioned``) lowered as ``backend`` lowers it."""
    from .frontend import optimize

    out = []
    for part in split.partitions:
        source = part.source()
        out.append(_lowering(part.name, source, optimize(source, spec, layout=way.layout, fold=way.fold), inputs, spec, way))
    return out


def _lower_served(module: Any, inputs: tuple[Any, ...], spec: TargetSpec, way: Way) -> tuple[list[Lowering], list[Any]]:
    """Every TVM partition of the graph(s) dynamo captures, lowered as ``backend`` lowers them."""
    from ..errors import TunebenchError
    from .partition import as_served, pytorch_ops

    lowerings, ops = [], []
    for split in as_served(module, inputs):
        ops += pytorch_ops(split.module)
        lowerings += _partition_lowerings(split, inputs, spec, way)
    if not lowerings:
        raise TunebenchError("no op of the model can be lowered by TVM: nothing to tune")
    return lowerings, ops


def _lowering(name: str, source: Any, relax_mod: Any, inputs: tuple[Any, ...], spec: TargetSpec, way: Way) -> Lowering:
    """A lowering with its tasks: the direct ones, plus with ``winograd`` the Winograd ones of its
    eligible 3x3 convs (NCHW only)."""
    from .frontend import optimize
    from .tasks import extract_tasks
    from .winograd import signatures

    convs = signatures(source) if way.layout == "nchw" else []
    tasks = extract_tasks(relax_mod, spec, convs)
    if way.winograd and convs:
        known = {t.workload_key for t in tasks}
        tasks += [t for t in extract_tasks(optimize(source, spec, convs), spec, convs) if t.workload_key not in known]
        tasks.sort(key=lambda t: (-t.total_flop, t.name))
    return Lowering(name, source, relax_mod, tasks, inputs)
