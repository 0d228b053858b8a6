"""Files that must never be half-written: atomic writes, directories switched in whole, and one writer at a time per
results directory."""
from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from ktlib import paths

try:  # POSIX file locks; without them ktlib still imports, and only writing a results directory is refused
    import fcntl
except ImportError:
    fcntl = None

LOCK_FILE = ".lock"  # names the writer's PID; the OS lock on the directory itself, not this file, is what counts


class StoreError(RuntimeError):
    """A results directory cannot be written, or another process is writing to it."""


class Busy(StoreError):
    """Another process holds the results directory's writer lock."""


def part_name(dest: Path, kind: str = "part") -> Path:
    """The temporary file that dest is written through, beside it: .<name>.<pid>.<8 hex digits>.part; or (kind
    "old") the name dest's old contents take while a directory is switched by two renames."""
    return dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")


def ktlib_parts(directory: Path, name: str | None = None, kind: str = "part") -> list[Path]:
    """The temporary files in directory that part_name made (for `name` only, if given): nothing else, so a
    user's own `.notes.part` is never taken for one."""
    pattern = re.compile(rf"\.{re.escape(name) if name else '.+'}\.\d+\.[0-9a-f]{{8}}\.{kind}")
    return [p for p in directory.glob(f".*.{kind}") if pattern.fullmatch(p.name)]


def remove_stale_parts(dest: str | os.PathLike) -> None:
    """Delete the temporary files that a process killed inside atomic_open(dest) left behind, and the directories
    that one killed inside new_directory(dest) left (those no living process holds)."""
    dest = Path(dest)
    for stale in ktlib_parts(dest.parent, dest.name):
        if not stale.is_dir():
            stale.unlink(missing_ok=True)
            continue
        try:
            fd = os.open(stale, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by its maker while it fills it
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # in use: another process is filling it
        finally:
            os.close(fd)


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


def copy_file(source: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a file's bytes to dest (a new file, in a directory being filled), on disk before this returns."""
    with open(source, "rb") as src, open(dest, "xb") as out:
        shutil.copyfileobj(src, out)
        out.flush()
        os.fsync(out.fileno())


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    """Replace dest with data, atomically; a failure (disk full, no permission) names the file and leaves
    the old one as it was."""
    try:
        with atomic_open(dest) as f:
            f.write(data)
    except OSError as e:
        raise StoreError(f"cannot write {dest}: {e.strerror or e}") from None


# ---------------------------------------------------------------- a directory replaced in one step

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # linux/fcntl.h, linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories' names in one step (Linux's renameat2 RENAME_EXCHANGE); False where the system or the
    file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sync_directory(directory: Path) -> None:
    """Put a directory's entries (a rename in it) on disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def switch(new: Path, dest: Path) -> None:
    """Put the directory `new` in dest's place in one step; dest's old contents end up under the name `new` (or
    nothing there, when dest did not exist or was empty). Where the system cannot swap two names at once, two renames
    do it: dest's old contents wait under a name of their own (part_name(dest, "old")), a failure of the second
    rename puts them back, and after a kill between the two the next new_directory(dest) does (settle)."""
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        os.replace(new, dest)  # onto nothing, or an empty directory: one rename
    elif not _exchange(new, dest):
        old = part_name(dest, "old")
        os.rename(dest, old)
        try:
            os.rename(new, dest)
        except OSError:
            os.rename(old, dest)
            raise
        try:
            os.rename(old, new)  # for new_directory to remove
        except OSError:  # settled meanwhile by another process (settle): the switch is done all the same
            pass
    _sync_directory(dest.parent)


def settle(dest: str | os.PathLike) -> Path:
    """Clear up after a process killed inside new_directory(dest): the directory it was filling removed, and, if it
    died in the middle of switch(_, dest) by two renames, dest's old contents put back where there is no dest (the
    switch had not happened) or removed where there is one (it had). Returns dest with its symbolic links resolved:
    the directory that is switched is the real one."""
    dest = Path(os.path.realpath(dest))
    if dest.parent.is_dir():
        olds = sorted(ktlib_parts(dest.parent, dest.name, "old"), key=lambda p: p.stat().st_mtime)
        if olds and not dest.exists():
            os.rename(olds.pop(), dest)
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
        remove_stale_parts(dest)
    return dest


@contextmanager
def new_directory(dest: str | os.PathLike):
    """An empty directory to fill in dest's place: made beside it, and switched with dest in one step only if the
    block succeeds; on any failure, or a kill, dest is as it was and the new directory is removed (by the next
    new_directory(dest), if this process was killed)."""
    dest = settle(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    new = part_name(dest)
    new.mkdir()
    fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # ours while we fill it: remove_stale_parts leaves it alone
        yield new
        switch(new, dest)
    finally:
        os.close(fd)
        shutil.rmtree(new, ignore_errors=True)  # what failed, or dest's old contents


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


def _same(fd: int, directory: Path) -> bool:
    """Whether fd is still the directory that its path names (not one switched out of its place meanwhile)."""
    try:
        here, there = os.fstat(fd), os.stat(directory)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


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


@contextmanager
def held(directory: str | os.PathLike, exclusive: bool = False):
    """Hold a directory's lock for the block without writing in it: shared, so that no writer starts while we read
    it (and a writer at work refuses us), or exclusive, so that no one else writes or reads it. Nothing to hold for
    a directory that does not exist."""
    directory, fd = Path(directory), None
    try:
        while True:
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                fd = None
                break
            except OSError as e:
                raise StoreError(f"{directory} cannot be opened: {e.strerror or e}") from None
            _busy(directory, fd, False, exclusive)
            if _same(fd, directory):
                break
            os.close(fd)  # switched out of its place as we opened it: lock what is there now
            fd = None
        yield directory
    finally:
        if fd is not None:
            os.close(fd)


def _open_lock(directory: Path) -> int:
    """The directory itself, opened to be locked: a lock that no file deleted by hand can undo."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise StoreError(f"results directory {directory} cannot be written: {e.strerror or e}") from None


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
        while not _same(fd, directory):  # switched out of its place (a publish) while we waited: lock the new one
            os.close(fd)
            fd = -1
            fd = _open_lock(directory)
            _busy(directory, fd, wait, exclusive=True)
        try:
            paths.probe(directory)
            (directory / LOCK_FILE).write_text(f"{os.getpid()}\n")  # who holds it, for the messages of others
        except OSError as e:
            raise StoreError(f"results directory {directory} cannot be written: {e.strerror or e}") from None
        for stale in ktlib_parts(directory):  # only a writer makes these, and no other writer is running
            if not stale.is_dir():  # a directory being filled (new_directory) is another writer's, and locked
                stale.unlink(missing_ok=True)
        with _guard:
            _held.add(key)
        try:
            yield directory
        finally:
            with _guard:
                _held.discard(key)
    finally:
        if fd >= 0:
            os.close(fd)  # closing the descriptor releases the lock
