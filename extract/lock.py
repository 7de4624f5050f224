"""A per-store lock that dies with its holder.

``fcntl.flock`` on ``<store>.lock``: the kernel drops the lock when the holding process exits
for any reason (Ctrl-C, kill -9, a crash), so a dead run never leaves a stale lock behind,
yet two live runs on the same store can never interleave. The file also records who holds
it (pid, host, command) for the message the second run prints while it waits.

Caveat: flock is advisory and local; on NFS it depends on the mount (``local_lock``), so
keep the cache on a local disk or make sure only one host writes to a store.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from mer.common import console
from mer.common.errors import MerError


class StoreLock:
    def __init__(self, store: Path, wait: bool = True, poll: float = 0.5, timeout: float | None = None):
        self.path = Path(str(store) + ".lock")
        self.wait = wait
        self.poll = poll
        self.timeout = timeout
        self._fd: int | None = None

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "StoreLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        t0 = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                h = self.holder()
                who = f"pid {h.get('pid', '?')} on {h.get('host', '?')}"
                if not self.wait or (self.timeout is not None and time.monotonic() - t0 > self.timeout):
                    os.close(fd)
                    raise MerError(f"{self.path.with_suffix('')}: another extraction ({who}) is writing this store") from None
                if not told:
                    console.info(f"waiting: another extraction ({who}) is writing {Path(str(self.path)[:-5]).name}")
                    told = True
                time.sleep(self.poll)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "argv": sys.argv[:6]}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
