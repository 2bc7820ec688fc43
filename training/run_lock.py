"""`RunLock`: one process at a time in a run folder (`out/.lock`)."""

import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = ".lock"


class RunFolderBusy(ValueError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """An exclusive `flock` on `folder/.lock`, held while a run writes `folder`.

    Two runs on one `--out` used to interleave their checkpoints and
    metrics.jsonl and both exit 0. The lock file records who holds it (pid,
    host, command, start time), so the refusal names the other process. The
    kernel drops the lock when its holder dies, even by kill -9, so a killed
    run never blocks its own `--resume`. The folder is created if missing
    and, if it is still empty when the lock is released, removed again (a
    run refused before writing anything leaves nothing behind).

    Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "run"
    >>> with RunLock(folder):
    ...     try:
    ...         RunLock(folder).acquire()
    ...     except RunFolderBusy as e:
    ...         print(f"in use by another run (pid {os.getpid()} on" in str(e))
    True
    >>> folder.exists()
    False
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._file = None
        self._created = False

    def acquire(self):
        import fcntl

        _check_folder_path(self.folder)
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip()
                f.close()
                raise RunFolderBusy(
                    f"{self.folder}: in use by another run ({_describe(holder)}); wait for it "
                    f"to finish, or choose another --out") from None
            # A holder that released between our open and flock may have
            # unlinked the file: then lock the new one instead.
            try:
                same = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])}))
        f.flush()
        self._file = f
        return self

    def release(self):
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)
        self._file.close()  # closing drops the flock
        self._file = None
        if self._created:
            try:
                self.folder.rmdir()  # only if nothing was written
            except OSError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _describe(holder):
    try:
        info = json.loads(holder)
        return (f"pid {info['pid']} on {info['host']}, started {info['started']}: "
                f"{info['command']}")
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its details yet"


def _check_folder_path(folder):
    """`ValueError` naming the part of `folder` that is a file, not a folder."""
    for part in [folder, *folder.parents]:
        if part.exists():
            if not part.is_dir():
                where = "" if part == folder else f" ({part} is a file)"
                raise ValueError(f"{folder}: not a folder{where}; choose another --out")
            return
