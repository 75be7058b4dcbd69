"""Lowering: a PyTorch model and example inputs become Relax modules and the tuning tasks in them.

``frontend`` imports and fuses (with ``fastmath``'s rewrites), ``layout`` and ``winograd`` are the
other ways a conv can be lowered, ``partition`` splits off what the Relax frontend cannot convert
(as the backend serves it), ``tasks`` extracts and weights the TIR workloads, and ``model`` puts
them together per input shape (``lower_model``). Hands to search the tasks to tune, and to serving
the lowerings it chooses among. Imports nothing of the stages above it.
"""
