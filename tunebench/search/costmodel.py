"""The cost model store: a search's XGBoost cost model saved beside its log, warm-started by the next run.

Without it every resume retrains from scratch and every transfer starts blind. MetaSchedule's
``XGBModel.save`` pickles its training data, and unpickling a file that came with a log from
another machine would run that machine's code; this store keeps the same content in plain arrays
(``.npz``, loaded with ``allow_pickle=False``) and the booster in XGBoost's own JSON.

The training data is grouped by workload, and XGBModel normalizes each group's costs by its
fastest: groups timed on another kind of machine are stored under that machine's class
(``target.measurement_class``) and loaded under a prefixed name, so a prior from another CPU
never shares a normalization with this CPU's timings. Each group keeps its ``MAX_PER_GROUP``
fastest candidates, which bounds the file for logs meant to be shipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write

MAX_PER_GROUP = 256
SUFFIX = ".costmodel.npz"


def model_path(log_path: str | os.PathLike[str]) -> Path:
    """``tuning_logs/resnet18-avx2.jsonl[.gz]`` -> ``tuning_logs/resnet18-avx2.costmodel.npz``."""
    p = Path(log_path)
    return p.with_name(p.name.removesuffix(".gz").removesuffix(".jsonl") + SUFFIX)


def save(model: Any, path: Path, here: str) -> int:
    """Write ``model`` (an ``XGBModel`` with a trained booster) atomically; return the samples kept.

    Groups under their plain workload hash were timed here (``here``); prefixed ones keep their class.
    """
    if model.booster is None:
        return 0
    classes, hashes, counts, rows, costs, feats = [], [], [], [], [], []
    for name, group in model.data.items():
        cls, _, plain = name.rpartition("|")
        keep = np.argsort(group.costs, kind="stable")[:MAX_PER_GROUP]
        classes.append(cls or here)
        hashes.append(plain)
        counts.append(len(keep))
        costs.append(group.costs[keep])
        for i in keep:
            rows.append(len(group.features[i]))
            feats.append(group.features[i])
    booster = np.frombuffer(bytes(model.booster.save_raw("json")), dtype=np.uint8)
    arrays = dict(
        classes=np.array(classes, dtype=str),
        hashes=np.array(hashes, dtype=str),
        counts=np.array(counts, dtype=np.int64),
        rows=np.array(rows, dtype=np.int64),
        costs=np.concatenate(costs).astype(np.float32) if costs else np.zeros(0, np.float32),
        features=np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, 0), np.float32),
        booster=booster,
    )
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays), typed=True)  # numpy adds .npz to a name without it
    return int(sum(counts))


def load(model: Any, path: Path, here: str) -> int:
    """Fill ``model`` (a fresh ``XGBModel``) from ``path``; return the samples loaded.

    The loaded booster predicts from the first batch on; the next retraining (XGBModel retrains
    once its data has grown by a fifth) learns from the loaded data and this run's together.
    """
    import xgboost as xgb
    from tvm.s_tir.meta_schedule.cost_model.xgb_model import FeatureGroup

    with np.load(path, allow_pickle=False) as z:
        rows = np.cumsum(np.concatenate([[0], z["rows"]]))
        starts = np.cumsum(np.concatenate([[0], z["counts"]]))
        features, costs = z["features"], z["costs"]
        for g, (cls, plain) in enumerate(zip(z["classes"], z["hashes"], strict=True)):
            lo, hi = int(starts[g]), int(starts[g + 1])
            name = str(plain) if str(cls) == here else f"{cls}|{plain}"
            feats = [features[rows[i] : rows[i + 1]] for i in range(lo, hi)]
            model.data[name] = FeatureGroup(group_hash=name, features=feats, costs=costs[lo:hi].copy())
        booster = xgb.Booster()
        booster.load_model(bytearray(z["booster"].tobytes()))
    model.booster = booster
    model.data_size = int(starts[-1])
    model.last_train_size = model.data_size
    return model.data_size
