"""Does a peer skip a conv's padded taps? One 3x3 conv, the same output and padded work, with and without padding.

    .venv/bin/python benchmarks/padded_taps.py --peer openvino [--rounds 3] [--runs 60]

For each of ResNet's 3x3 stride-1 conv shapes (channels x output side: 64x56, 128x28, 256x14,
512x7), a one-conv model is timed twice on the peer: on the side x side input with padding 1, and
on a (side + 2) x (side + 2) input with no padding. Both compute the same output from the same
padded FLOP; a runtime that multiplies every tap (tunebench's kernels: their reduction runs over
the padded input) takes as long on both, one that skips the taps falling on padding takes the
valid-tap fraction ((3 side - 2) / 3 side)^2 as long on the padded one. The conv node's own time
(``benchmarks/per_layer.py``'s profile of the peer), fastest of ``--rounds`` alternated rounds.
Writes ``benchmarks/results/padded-taps-<peer>-<llvm cpu>.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

import per_layer  # this folder's: each peer's per-node profile

OUT = Path(__file__).resolve().parent / "results"
SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))  # ResNet18's 3x3 stride-1 convs: channels, output side


def conv_ms(peer: str, channels: int, side: int, pad: int, threads: int, runs: int) -> float:
    """Median ms of the peer's conv node for a channels->channels 3x3 conv with ``side`` x ``side`` output."""
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(channels, channels, 3, padding=pad, bias=False)).eval()
    x = torch.randn(1, channels, side + 2 - 2 * pad, side + 2 - 2 * pad)
    profile = per_layer.ov_kernels if peer == "openvino" else per_layer.ort_kernels
    with torch.no_grad():
        kernels, _ = profile(model, (x,), threads, runs)
    (conv,) = [k for k in kernels if k.kind == "conv"]
    return conv.ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer", choices=sorted(per_layer.PEERS), default="openvino")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=60)
    args = p.parse_args()
    from tunebench.bench.bench import set_threads
    from tunebench.target import host_fingerprint, physical_cores

    threads = physical_cores()
    set_threads(threads)
    import torch

    torch.manual_seed(0)
    host, date = host_fingerprint(), datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = [
        f"# Padded taps: does {per_layer.PEERS[args.peer][0]} skip them? (3x3 conv, same output, pad 1 vs a pre-padded input)",
        f"Host: {host['cpu']} (LLVM `{host['llvm_cpu']}`), {threads} threads. Date: {date}. "
        f"Command: `python benchmarks/padded_taps.py {shlex.join(sys.argv[1:])}`.",
        "",
    ]
    for channels, side in SHAPES:
        times: dict[int, list[float]] = {1: [], 0: []}
        for _ in range(args.rounds):
            for pad in (1, 0):
                times[pad].append(conv_ms(args.peer, channels, side, pad, threads, args.runs))
        padded, plain = min(times[1]), min(times[0])
        valid = ((3 * side - 2) / (3 * side)) ** 2
        lines.append(
            f"{channels}x{side}x{side}: pad 1 {padded:.3f} ms, pre-padded {plain:.3f} ms, ratio {padded / plain:.3f}; "
            f"valid-tap fraction {valid:.3f}"
        )
        print(lines[-1], flush=True)
    (OUT / f"padded-taps-{args.peer}-{host['llvm_cpu']}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
