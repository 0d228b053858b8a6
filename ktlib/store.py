"""Files that must never be half-written: atomic writes, and one writer at a time per results directory."""
from __future__ import annotations

import errno
import os
import re
import secrets
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

try:  # POSIX file locks; without them ktlib still imports, and only writing a results directory is refused
    import fcntl
except ImportError:
    fcntl = None

LOCK_FILE = ".lock"  # names the writer's PID; the OS lock on the directory itself, not this file, is what counts


class StoreError(RuntimeError):
    """A results directory cannot be written, or another process is writing to it."""


class Busy(StoreError):
    """Another process holds the results directory's writer lock."""


def part_name(dest: Path) -> Path:
    """The temporary file that dest is written through, beside it: .<name>.<pid>.<8 hex digits>.part."""
    return dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def ktlib_parts(directory: Path, name: str | None = None) -> list[Path]:
    """The temporary files in directory that part_name made (for `name` only, if given): nothing else, so a
    user's own `.notes.part` is never taken for one."""
    pattern = re.compile(rf"\.{re.escape(name) if name else '.+'}\.\d+\.[0-9a-f]{{8}}\.part")
    return [p for p in directory.glob(".*.part") if pattern.fullmatch(p.name)]


def remove_stale_parts(dest: str | os.PathLike) -> None:
    """Delete the temporary files that a process killed inside atomic_open(dest) left behind."""
    dest = Path(dest)
    for stale in ktlib_parts(dest.parent, dest.name):
        stale.unlink(missing_ok=True)


@contextmanager
def atomic_open(dest: str | os.PathLike):
    """A binary file to write dest through: written beside it, renamed into place only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_name(dest)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    """Replace dest with data, atomically; a failure (disk full, no permission) names the file and leaves
    the old one as it was."""
    try:
        with atomic_open(dest) as f:
            f.write(data)
    except OSError as e:
        raise StoreError(f"cannot write {dest}: {e.strerror or e}") from None


# ---------------------------------------------------------------- one writer per results directory

_held: set[str] = set()  # the real paths of the results directories whose lock this process holds
_guard = threading.Lock()


def _holder(directory: Path) -> str:
    """Who holds the lock, as the PID file names it: that process if it is alive, else (a stale file, or a
    process other than ktlib holding the lock) only "another process"."""
    try:
        pid = (directory / LOCK_FILE).read_text(errors="replace").strip()
        if pid.isdigit() and int(pid) != os.getpid():
            os.kill(int(pid), 0)
            return f"process {pid}"
    except PermissionError:  # alive, but another user's
        return f"process {pid}"
    except (OSError, ValueError, OverflowError):
        pass
    return "another process"


def _busy(directory: Path, fd: int, wait: bool, exclusive: bool) -> None:
    """Take the lock on fd, shared or exclusive; if another process holds it, refuse or wait."""
    if fcntl is None:
        raise StoreError(f"results directory {directory}: this system has no POSIX file locks (fcntl), which ktlib "
                         f"needs to keep one writer per results directory; run sweeps on Linux or macOS")
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
    who = _holder(directory)
    if not wait:
        raise Busy(f"results directory {directory} is in use by {who}, which holds its lock; wait for it to "
                   f"finish (--wait, or wait=True), or choose another results directory")
    print(f"waiting for {who} to finish with {directory}", file=sys.stderr, flush=True)
    fcntl.flock(fd, mode)


def wait_until_free(directory: str | os.PathLike, wait: bool = False) -> None:
    """Refuse (or, with wait, wait out) another process that is writing to directory; creates nothing."""
    directory = Path(directory)
    with _guard:
        if os.path.realpath(directory) in _held:
            return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # no directory, so no writer yet (or one writer() will report clearly)
        return
    try:
        _busy(directory, fd, wait, exclusive=False)
    finally:
        os.close(fd)


def _open_lock(directory: Path) -> int:
    """The directory itself, opened to be locked: a lock that no file deleted by hand can undo."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise StoreError(f"results directory {directory} cannot be written: {e.strerror or e}") from None


def probe(directory: Path) -> None:
    """Create the directory if need be, then a file in it, and remove the file: an OSError says why the
    directory cannot be written, before any work depends on it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = part_name(directory / "probe")
    path.touch()
    path.unlink()


@contextmanager
def writer(directory: str | os.PathLike, wait: bool = False):
    """Hold the results directory's writer lock for the block: an OS lock, released when the process ends
    however it ends. Another process is refused with its PID named, or, with wait=True, waited for.
    Re-entrant within a process. On entry, temporary files a killed writer left behind are removed."""
    directory = Path(directory)
    key = os.path.realpath(directory)
    with _guard:
        inner = key in _held
    if inner:  # this process already holds it (a sweep preparing its source net)
        yield directory
        return
    fd = _open_lock(directory)
    try:
        _busy(directory, fd, wait, exclusive=True)
        try:
            probe(directory)
            (directory / LOCK_FILE).write_text(f"{os.getpid()}\n")  # who holds it, for the messages of others
        except OSError as e:
            raise StoreError(f"results directory {directory} cannot be written: {e.strerror or e}") from None
        for stale in ktlib_parts(directory):  # only a writer makes these, and no other writer is running
            stale.unlink(missing_ok=True)
        with _guard:
            _held.add(key)
        try:
            yield directory
        finally:
            with _guard:
                _held.discard(key)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
