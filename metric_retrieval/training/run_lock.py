"""One writer per folder: an exclusive lock on ``FOLDER/.lock``, taken when the folder is opened (a training's
run folder; an index directory for ``index.py build`` and ``add``).

The lock is a ``fcntl.flock`` on that file, held (by rank 0) for the whole run. The kernel releases it when
the holding process dies, however it dies, so a lock left by a killed run is taken over silently; the file
itself stays (it records who holds it, for the error message). ``flock`` is honoured on local file systems
and on NFSv4 / Lustre mounts that support it; a shared folder without lock support is not protected.

Holding the lock also makes it safe to delete the temporary files a killed write left behind
(:func:`remove_stale_temporaries`): no other live process can be writing them.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from metric_retrieval.utils.errors import UserError

log = logging.getLogger("metric_retrieval")
LOCK_NAME = ".lock"


class RunFolderBusy(UserError):
    """Another live process writes into the same folder (a training's ``--output_dir``, an index)."""


class RunLock:
    """``with RunLock(out_dir):`` → the exclusive lock of the folder, released on exit.

    ``what`` names the folder and ``holder`` the kind of process that holds it in the error message.
    """

    def __init__(self, out_dir: str | os.PathLike, what: str = "--output_dir", holder: str = "another training",
                 ) -> None:
        self.path, self.what, self.holder = Path(out_dir) / LOCK_NAME, what, holder
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            raise UserError(f"{self.what} {self.path.parent} is not writable (permission denied creating "
                            f"{self.path.name}): fix its permissions or choose another folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderBusy(f"{self.what} {self.path.parent} is in use by {self.holder} ({holder}); "
                                f"wait for it to finish, stop it, or choose another {self.what}") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "a process that has not yet recorded itself"


def remove_stale_temporaries(out_dir: str | os.PathLike) -> None:
    """Delete the ``.NAME.*.tmp`` files of atomic writes interrupted by a kill (call with the lock held)."""
    stale = sorted(Path(out_dir).glob(".*.tmp"))
    if not stale:
        return
    size = sum(p.stat().st_size for p in stale)
    for p in stale:
        p.unlink(missing_ok=True)
    log.info("removed %d temporary file(s) (%.1f MB) left by an interrupted write: %s", len(stale), size / 1e6,
             ", ".join(p.name for p in stale))
