"""Serve: the tuned model, called. Reads logs and lowers models again to build and run what they say.

``choose`` picks the records and the lowering for this host, ``build`` applies them and compiles,
``runtime`` calls the result (VM, threads, DLPack); ``backend`` is ``torch.compile(backend="tunebench")``
and ``context`` its ``apply_history_best`` block; ``cache``, ``keys``, ``plan`` and ``digest`` keep
builds, splits and a log's serving view on disk; ``deploy`` saves and loads artifacts; ``spin`` and
``tvm_import`` set up the process. Hands the bench and users a callable model.
"""
