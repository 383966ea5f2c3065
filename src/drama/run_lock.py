"""One writer per run folder: ``drama fit`` holds the folder's lock file (:attr:`drama.run.RunFolder.lock`) for the
whole run.

The lock is an advisory ``flock`` on that file (``filelock.FileLock``), so the kernel lets go of it when its
holder ends, however it ends: a crash or ``kill -9`` leaves the file behind but no lock. The holder writes its PID
into the file when it takes the lock and empties the file when it lets go; so

* a second ``drama fit`` on the folder (``--resume``, or a new run with the same ``runtime.run_name``) finds the lock
  taken and is refused with a :class:`ConfigError` naming the holder's PID, before it writes anything;
* a free lock whose file still names another PID was left by a process that was killed: it is taken over, with a
  one-line warning on stderr.

On a file system without ``flock`` the run goes on unlocked, with a one-line warning.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from filelock import FileLock, Timeout

from drama.config import ConfigError
from drama.run import RunFolder

_NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)
"""errnos of a file system that cannot ``flock``."""


def _read_pid(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _warn(message: str) -> None:
    print(f"drama: warning: {message}", file=sys.stderr, flush=True)


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir``'s lock, or raises :class:`ConfigError` naming the PID that holds it.

    ``create``: make the folder first (a new run; nothing else is written before the lock is held); if the block
    fails before anything but the lock file was written there, the folder it made is removed again. After
    entering, :attr:`took_over` is the PID of the process whose stale lock was taken over, else None.
    """

    def __init__(self, run_dir: Path | str, *, create: bool = False) -> None:
        self.folder = RunFolder(Path(run_dir))
        self.create = create
        self.took_over: int | None = None
        self._fd: int | None = None
        self._lock = FileLock(self.folder.lock, timeout=0, fallback_to_soft=False, on_acquired=self._claim)
        self._held = False
        self._made = False

    @staticmethod
    def holder(run_dir: Path | str) -> int | None:
        """The PID holding ``run_dir``'s lock (0 when the holder wrote none), or None when it is free; creates and
        changes nothing."""
        path = RunFolder(Path(run_dir)).lock
        if not path.is_file():
            return None
        probe = FileLock(path, timeout=0, fallback_to_soft=False)
        try:
            probe.acquire(blocking=False)
        except Timeout:
            return _holder_pid(path)
        except OSError:
            return None
        probe.release()
        return None

    @staticmethod
    def check_free(run_dir: Path | str) -> None:
        """Raise the refusal :class:`ConfigError` when another process holds ``run_dir``'s lock."""
        pid = RunLock.holder(run_dir)
        if pid is not None:
            raise ConfigError(_in_use(RunFolder(Path(run_dir)), pid))

    def _claim(self, fd: int) -> None:
        """Called with the lock's descriptor once the lock is held: note a stale PID, write ours."""
        previous = _read_pid(os.pread(fd, 32, 0).decode(errors="replace"))
        if previous is not None and previous != os.getpid():
            self.took_over = previous
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def __enter__(self) -> RunLock:
        if self.create:
            self._made = not self.folder.root.exists()
            self.folder.root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            raise ConfigError(_in_use(self.folder, _holder_pid(self.folder.lock))) from None
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise ConfigError(f"cannot lock {self.folder.lock}: {exc.strerror or exc}") from None
            _warn(f"{self.folder.lock}: this file system cannot lock files; nothing stops a second drama fit from "
                  "writing into the run folder at the same time")
            return self
        self._held = True
        if self.took_over is not None:
            why = ("is running but does not hold it: the folder was copied or moved while that run wrote to it"
                   if pid_alive(self.took_over) else "is no longer running (killed or crashed)")
            _warn(f"took over the stale lock {self.folder.lock} left by PID {self.took_over}, which {why}")
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._held:
            return
        try:
            if self._fd is not None:
                os.ftruncate(self._fd, 0)  # a free lock names no PID: the next holder takes it over silently
        except OSError:
            pass
        finally:
            self._fd, self._held = None, False
            self._lock.release()
        if exc_info[0] is not None and self._made:
            self._remove_made_folder()

    def _remove_made_folder(self) -> None:
        """After a failed start: the folder this lock made goes again if it holds nothing but the lock file."""
        try:
            if {p.name for p in self.folder.root.iterdir()} <= {self.folder.lock.name}:
                self.folder.lock.unlink(missing_ok=True)
                self.folder.root.rmdir()
        except OSError:
            pass


def _holder_pid(path: Path) -> int:
    try:
        return _read_pid(path.read_text(errors="replace")) or 0
    except OSError:
        return 0


def _in_use(folder: RunFolder, pid: int) -> str:
    if not pid:
        return (f"run directory {folder.root} is in use: another process holds its lock {folder.lock}; wait for it to "
                "end")
    if pid == os.getpid() or pid_alive(pid):
        return (f"run directory {folder.root} is in use by another drama fit (PID {pid}, which holds "
                f"{folder.lock}): wait for it to end or stop it (kill {pid})")
    return (f"run directory {folder.root} is locked by PID {pid}, which is no longer running: a process it started "
            f"still holds {folder.lock}; stop that one")
