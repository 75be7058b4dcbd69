"""The one exception type users see: a message meant to be printed as a single line.

The CLI turns a ``TunebenchError`` into ``error: <message>`` and exit code 2 with no
traceback; anything else is a bug and keeps its traceback.
"""


class TunebenchError(Exception):
    """A user-facing error: bad model name, bad target, corrupt log, unsupported op."""
