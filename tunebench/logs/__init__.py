"""Logs: the tuning-record format every other stage reads or writes, and what users do with a log.

``records`` is the append-only JSON-lines format (reading, writing, locks, the best record per
workload, the one rule for whether a record is usable on this host); ``share`` shows, merges and
prunes logs; ``traces`` replays a record's schedule on a workload. Search writes logs through it,
serving reads them: it hands both the records and the means to apply them.
"""
