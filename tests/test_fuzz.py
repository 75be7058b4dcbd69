"""The log and manifest readers under Hypothesis: truncated, garbled, mistyped and reordered input never
raises anything but ``TunebenchError``, and a log reader never drops a valid record that stands before
or after the damage (plain logs line by line, compressed ones batch by batch).

Bounded and deterministic for CI: a fixed number of examples per property, derandomized, no example
database; the whole file runs in seconds.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunebench.errors import TunebenchError
from tunebench.logs import records as rec
from tunebench.serve import deploy

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ["k0", "k1", "k2"]

finite = st.floats(min_value=1e-7, max_value=10.0, allow_nan=False)
records = st.builds(
    rec.Record,
    key=st.sampled_from(KEYS),
    trace=st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4)), max_size=4),
    args_info=st.lists(st.integers(0, 3), max_size=2),
    run_secs=st.one_of(st.none(), st.lists(finite, min_size=1, max_size=4)),
    error=st.one_of(st.none(), st.text(max_size=8)),
    target=st.fixed_dictionaries({"kind": st.just("llvm"), "mcpu": st.sampled_from(["core-avx2", "znver3"])}),
    host=st.fixed_dictionaries({"cpu": st.text(max_size=6)}),
    tvm=st.just(rec.tvm_version()),
    time=st.floats(0, 2e9, allow_nan=False),
    protocol=st.sampled_from(rec.PROTOCOLS),
)
WORKLOADS = [rec._dump(rec.WorkloadEntry(k, f"task_{k}", 1e6, "bW9k", 2).to_json()) for k in KEYS]
# any JSON value, of any type a field might be mistyped as (huge and infinite numbers included)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)


def cut_or_garbled(draw: st.DrawFn, how: str, raw: bytes) -> bytes:
    """``raw`` truncated (``how == "truncate"``) or with 1-4 bytes overwritten (``"garble"``): the
    damage a log line and a manifest file share."""
    if how == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def damaged(draw: st.DrawFn, line: bytes) -> bytes:
    """``line`` (a JSON object and its newline) truncated, garbled, mistyped or replaced by garbage; still one line or more."""
    body = line.rstrip(b"\n")
    how = draw(st.sampled_from(["truncate", "garble", "mistype", "garbage", "nested"]))
    if how in ("truncate", "garble"):
        body = cut_or_garbled(draw, how, body)
    elif how == "mistype":
        obj = json.loads(body)
        obj[draw(st.sampled_from(sorted(obj)))] = draw(json_values)
        body = json.dumps(obj).encode()
    elif how == "garbage":
        body = draw(st.binary(max_size=40))
    else:
        body = b"[" * 5000  # deeper than json parses
    return body + b"\n"


@st.composite
def plain_logs(draw: st.DrawFn) -> tuple[bytes, set[str], list[bytes]]:
    """A log's bytes, the identities of its undamaged records, and its damaged lines."""
    recs = draw(st.lists(records, min_size=1, max_size=8))
    lines = [(line, True) for line in WORKLOADS] + [(rec._dump(r.to_json()), True) for r in recs]
    hit = draw(st.sets(st.integers(0, len(lines) - 1), max_size=len(lines) - 1))  # one line left whole at least
    lines = [(draw(damaged(line)), False) if i in hit else (line, ok) for i, (line, ok) in enumerate(lines)]
    lines = draw(st.permutations(lines))
    data = b"".join(line for line, _ in lines)
    if lines and not lines[-1][1] and draw(st.booleans()):  # a torn tail: the last (damaged) line unterminated
        data = data[:-1]
    kept = {rec.Record.from_json(json.loads(line)).identity() for line, ok in lines if ok and line.startswith(b'{"type": "record"')}
    return data, kept, [line for line, ok in lines if not ok]


def read_checked(path: Path, kept: set[str], damage: list[bytes]) -> None:
    """Read the log: only TunebenchError may escape, and only for a reason the damage explains;
    otherwise every record in ``kept`` is read back and the log can be ranked."""
    try:
        log = rec.read_log(path, warn=False)
    except TunebenchError as e:
        assert "newer than this tunebench reads" in str(e) and any(_claims_newer(line) for line in damage), e
        return
    got = {r.identity() for r in log.records}
    assert kept <= got, f"{len(kept - got)} valid record(s) dropped; problems: {log.problems}"
    log.best()
    log.trials()


def _claims_newer(line: bytes) -> bool:
    try:
        v = json.loads(line)["v"]
    except Exception:
        return False
    return isinstance(v, int) and not isinstance(v, bool) and v > rec.FORMAT_VERSION


def fuzz_reading(logs: st.SearchStrategy[tuple[bytes, set[str], list[bytes]]], path: Path) -> None:
    """Write each drawn log to ``path`` and check what reading it keeps (``read_checked``)."""

    @FUZZ
    @given(logs)
    def check(example: tuple[bytes, set[str], list[bytes]]) -> None:
        data, kept, damage = example
        path.write_bytes(data)
        read_checked(path, kept, damage)

    check()


def test_a_damaged_plain_log_keeps_every_valid_line(tmp_path: Path) -> None:
    fuzz_reading(plain_logs(), tmp_path / "fuzz.jsonl")


@st.composite
def compressed_logs(draw: st.DrawFn) -> tuple[bytes, set[str], list[bytes]]:
    """A ``.jsonl.gz`` log of batches (one gzip member each), some members damaged, reordered."""
    recs = draw(st.lists(records, min_size=1, max_size=8))
    members: list[tuple[bytes, set[str], bool]] = [(gzip.compress(b"".join(WORKLOADS), mtime=0), set(), True)]
    for r in recs:
        members.append((gzip.compress(rec._dump(r.to_json()), mtime=0), {r.identity()}, True))
    hit = draw(st.sets(st.integers(0, len(members) - 1), max_size=len(members) - 1))
    for i in sorted(hit):
        member = bytearray(members[i][0])
        how = draw(st.sampled_from(["truncate", "garble", "junk"]))
        if how == "truncate":
            member = member[: draw(st.integers(1, len(member) - 1))]
        elif how == "garble":
            for _ in range(draw(st.integers(1, 4))):
                member[draw(st.integers(0, len(member) - 1))] = draw(st.integers(0, 255))
        else:
            member += draw(st.binary(min_size=1, max_size=30))
        members[i] = (bytes(member), set(), False)
    members = draw(st.permutations(members))
    kept = set().union(*(ids for _, ids, ok in members if ok))
    return b"".join(m for m, _, _ in members), kept, []


def test_a_damaged_compressed_log_keeps_every_whole_batch(tmp_path: Path) -> None:
    fuzz_reading(compressed_logs(), tmp_path / "fuzz.jsonl.gz")


def test_appending_behind_a_damaged_batch_keeps_the_batches_after_it(tmp_path: Path) -> None:
    """A writer cuts off a torn last batch only: a damaged batch in the middle stays (skipped when read), and so do those behind it."""
    recs = [rec.Record("k0", [i], [], [1e-3], None, {"kind": "llvm"}, {"cpu": "x"}, rec.tvm_version(), time=float(i)) for i in range(4)]
    members = [gzip.compress(WORKLOADS[0] + rec._dump(r.to_json()), mtime=0) for r in recs[:3]]
    members[1] = members[1][:10] + b"\xff\xff" + members[1][12:]  # bit rot inside the second batch
    path = tmp_path / "rotten.jsonl.gz"
    path.write_bytes(b"".join(members))
    workloads = {"k0": rec.WorkloadEntry("k0", "task_k0", 1e6, "bW9k", 2)}
    rec.LogWriter(path).append([recs[3]], workloads)
    log = rec.read_log(path, warn=False)
    assert sorted(r.trace[0] for r in log.records) == [0, 2, 3]
    assert [p for p in log.problems if "compressed batch" in p] == [f"{path}: damaged compressed batch at byte {len(members[0])} skipped"]


VALID_MANIFEST = {
    "format": deploy.FORMAT,
    "tvm": "0.27.0",
    "target": {"kind": "llvm", "mcpu": "core-avx2", "num-cores": 2},
    "needs": ["avx2", "fma"],
    "inputs": [[[1, 3, 16, 16], "float32"]],
    "takes": [0],
    "outputs": [0],
    "out_spec": None,  # filled in below: torch's pytree text for one tensor
    "coverage": "1/1 subgraphs in TVM",
    "served": {"applied": 2},
}


@pytest.fixture(scope="module")
def manifest_text() -> str:
    import torch
    from torch.utils import _pytree as pytree

    _, spec = pytree.tree_flatten(torch.zeros(1))
    return json.dumps({**VALID_MANIFEST, "out_spec": pytree.treespec_dumps(spec)})


@st.composite
def manifests(draw: st.DrawFn, text: str) -> bytes:
    """The valid manifest with fields mistyped, dropped, added or reordered, or its text truncated or garbled."""
    obj = json.loads(text)
    how = draw(st.sampled_from(["mistype", "drop", "add", "reorder", "truncate", "garble", "nested"]))
    if how == "mistype":
        obj[draw(st.sampled_from(sorted(obj)))] = draw(json_values)
    elif how == "drop":
        del obj[draw(st.sampled_from(sorted(obj)))]
    elif how == "add":
        obj[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
    elif how == "reorder":
        obj = dict(draw(st.permutations(list(obj.items()))))
    raw = json.dumps(obj).encode()
    if how in ("truncate", "garble"):
        raw = cut_or_garbled(draw, how, raw)
    elif how == "nested":
        raw = raw[:-1] + b', "x": ' + b"[" * 5000 + b"}"
    return raw


def test_a_damaged_manifest_is_read_or_refused_with_a_clear_error(tmp_path: Path, manifest_text: str) -> None:
    import torch
    from torch.utils import _pytree as pytree

    (tmp_path / deploy.MANIFEST).write_text(manifest_text)
    assert deploy.read_manifest(tmp_path).inputs == VALID_MANIFEST["inputs"]

    @FUZZ
    @given(manifests(manifest_text))
    def check(raw: bytes) -> None:
        (tmp_path / deploy.MANIFEST).write_bytes(raw)
        try:
            m = deploy.read_manifest(tmp_path)
        except TunebenchError:
            return
        # what was read is what serving can use: the checks Deployed and load rely on hold
        assert all(isinstance(getattr(torch, dtype), torch.dtype) for _, dtype in m.inputs)
        assert pytree.treespec_loads(m.out_spec).num_leaves == len(m.outputs)
        assert all(0 <= i < len(m.inputs) for i in m.takes) and all(isinstance(f, str) for f in m.needs)
        assert isinstance(m.target, dict) and isinstance(m.tvm, str)

    check()
