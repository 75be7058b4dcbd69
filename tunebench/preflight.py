"""Checks a command makes before its work starts: a file it will write at the end of a tuning run,
a benchmark or a compile can be written, so a typo in a path costs no work and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import TunebenchError


def writable(path: str | os.PathLike[str], what: str, folder: bool = False) -> Path:
    """``path`` as a Path if a file (``folder``: a folder) can be created or replaced there, else a
    TunebenchError naming ``what`` (``--log``, ``--out``) and why. Nothing is created: the nearest
    folder that exists must be a directory this process may write in."""
    p = Path(path)
    if p.exists():
        if p.is_dir() != folder:
            raise TunebenchError(f"{what} {str(p)!r} is a {'file' if folder else 'directory'}, not a {'folder' if folder else 'file'}")
        if not os.access(p, os.W_OK):
            raise TunebenchError(f"cannot write {what} {str(p)!r}: permission denied")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise TunebenchError(f"cannot write {what} {str(p)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TunebenchError(f"cannot write {what} {str(p)!r}: no permission to write in {str(parent)!r}")
    return p
