"""Bench: the tuned model timed on the path users run, beside what they would run instead.

``bench`` times eager PyTorch, ``torch.compile`` (inductor), the peers (``peers``: ONNX Runtime,
OpenVINO) and tunebench's columns in one process; ``plot`` draws tuning curves (a model's estimated latency as its log grows).
It sits on every stage below and hands its tables to the CLI.
"""
