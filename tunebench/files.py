"""File safety: the one way tunebench replaces a file and the one way it holds a file lock.

``atomic_write`` writes to a temp name in the target's folder, fsyncs it, renames it over the
target and fsyncs the folder: a reader, or a process after a crash, sees the old file or the new
one whole, never half of either. ``locked`` holds an exclusive ``flock`` on the file now at a path:
a lock taken on a file that was renamed over or unlinked while we waited (``logs prune``, cache
eviction) is dropped and the new file locked, so two processes never both think they hold it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(path: Path, tag: str = "tmp", typed: bool = False) -> Path:
    """A hidden name beside ``path``, unique to this process and thread: ``.resnet18.jsonl.<pid>.<thread>.tmp``,
    which no ``*.jsonl`` glob picks up as a log. ``typed`` keeps the last suffix at the end, for writers
    that choose a format by it (numpy's ``.npz``, TVM's ``export_library``): ``tunebench-<key>.so`` ->
    ``.tunebench-<key>.<pid>.<thread>.tmp.so``, what ``cache.TEMP_FILE`` matches."""
    stem, suffix = (path.stem, path.suffix) if typed else (path.name, "")
    return path.with_name(f".{stem}.{os.getpid()}.{threading.get_ident()}.{tag}{suffix}")


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` survive a crash (the new name is in the folder's own data)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str | Callable[[Path], None], typed: bool = False) -> None:
    """Replace ``path`` with ``data`` (bytes, text, or a writer that fills the temp path it is given,
    such as ``np.savez_compressed`` or TVM's ``export_library``), or leave it as it was.

    ``typed``: the temp name ends in the target's suffix (``temp_path``). On any error the temp file
    is removed and the error raised: callers decide whether a refused write matters (a log's does; a
    cache entry's only costs a rebuild).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target, typed=typed)
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        fd = os.open(tmp, os.O_RDONLY)  # a writer's own file object is closed: fsync what it left
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the old file is untouched; leave no half-written copy beside it
        raise
    sync_folder(target.parent)


@contextmanager
def locked(path: Path, flags: int = os.O_RDWR | os.O_APPEND | os.O_CREAT, blocking: bool = True) -> Iterator[int | None]:
    """An exclusive ``flock`` on the file now at ``path`` (created with ``flags``): yields its
    descriptor, or None when not ``blocking`` and another process or thread holds it.

    If the path was renamed over or unlinked while we waited, the lock is on a file nobody else
    will lock again: drop it and lock the one now at ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield None
            return
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
