"""Where the embedded bus keeps its message files: in shared memory, linked from the bus folder.

Every message of the filesystem bus is a file created, renamed and deleted;
on a disk file system each creation is a journaled metadata change. Measured
on the 2-core benchmark machine (ext4 on a virtual disk): 200-800 us of CPU
per message file against 20-40 us on tmpfs, about six files per execution,
so the bus alone cost ~5 ms of CPU per core.noop (docs/benchmarks.md,
session 4).

So, with ``[messaging] filesystem_memory`` on (the default), the data folder
lives in a tmpfs (``/dev/shm``) as ``st2-bus-<uid>-<hash of the bus path>``
and ``<filesystem_path>/data`` is a symbolic link to it; the control folder
(bindings, owners) stays on disk. Everything that opens ``data`` works
unchanged.

What this trades: messages survive a restart of any or all services, not a
reboot of the machine. The records are the truth and every message is a
nudge the services' start-up sweeps replace (requested and scheduled
executions, due delayed ones, pending trigger instances, running
workflows), so a reboot loses no work; RabbitMQ is the production bus.

A tmpfs with less than MIN_FREE bytes free (Docker's default /dev/shm is
64 MB), or none at all (not Linux), leaves the folder on disk. Switching
the option either way moves waiting messages along with the folder.
Folders whose bus folder is gone (a deleted platform) are removed by the
next ``st2ctl start`` once STALE_AFTER seconds old, and a test run removes
its own at the end.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

LOG = logging.getLogger(__name__)

SHM_ROOTS = ("/dev/shm", "/run/shm")
MIN_FREE = 256 * 1024 * 1024
STALE_AFTER = 60.0
PREFIX = "st2-bus-"
# In each memory folder: the bus folder that links it, for clearing orphans.
OWNER_FILE = ".owner"
LOCK_FILE = ".data-folder.lock"


def shm_root(candidates: tuple[str, ...] = SHM_ROOTS, min_free: int = MIN_FREE) -> str | None:
    """A writable tmpfs with room for a backlog, or None."""
    for root in candidates:
        try:
            stats = os.statvfs(root)
        except OSError:
            continue
        if os.access(root, os.W_OK | os.X_OK) and stats.f_bavail * stats.f_frsize >= min_free:
            return root
    return None


def memory_folder(bus_folder: Path, root: str) -> Path:
    """The folder in root that holds the messages of the bus at bus_folder."""
    digest = hashlib.sha256(str(bus_folder.resolve()).encode()).hexdigest()[:16]
    return Path(root) / f"{PREFIX}{os.getuid()}-{digest}"


def data_folder(bus_folder: Path, in_memory: bool, shm: str | None = None) -> Path:
    """bus_folder/data, made: a link to a folder in shared memory when in_memory and one is found."""
    bus_folder.mkdir(parents=True, exist_ok=True)
    data = bus_folder / "data"
    root = (shm or shm_root()) if in_memory else None
    with _locked(bus_folder / LOCK_FILE):
        if root is None:
            _to_disk(data)
            return data
        target = memory_folder(bus_folder, root)
        _to_memory(bus_folder, data, target)
    return data


def clear_under(root: Path, shm: str | None = None) -> int:
    """Remove the memory folders of every bus folder under root (a finished test run's tree); how many."""
    base = shm or shm_root(min_free=0)
    if base is None:
        return 0
    prefix = str(Path(root).resolve()) + os.sep
    removed = 0
    for folder in Path(base).glob(f"{PREFIX}{os.getuid()}-*"):
        try:
            owner = (folder / OWNER_FILE).read_text().strip()
        except OSError:
            continue
        if owner.startswith(prefix):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _to_memory(bus_folder: Path, data: Path, target: Path) -> None:
    fresh = not target.is_dir()
    target.mkdir(mode=0o700, exist_ok=True)
    if fresh or not (target / OWNER_FILE).exists():
        (target / OWNER_FILE).write_text(str(bus_folder.resolve()))
    if data.is_symlink():
        if os.readlink(data) == str(target):
            return
        old = data.resolve()
        _relink(data, target)
        if old.is_dir() and old != target:
            _move_contents(old, target)
        return
    if data.is_dir():
        # Messages written before the option was on (or by an older version): keep them.
        parked = data.with_name(f"data.moving-{os.getpid()}")
        data.rename(parked)
        _relink(data, target)
        _move_contents(parked, target)
        shutil.rmtree(parked, ignore_errors=True)
        LOG.info("bus messages moved from %s to shared memory (%s)", data, target)
        return
    _relink(data, target)


def _to_disk(data: Path) -> None:
    if data.is_symlink():
        old = data.resolve()
        data.unlink()
        data.mkdir()
        if old.is_dir():
            _move_contents(old, data)
            shutil.rmtree(old, ignore_errors=True)
        return
    data.mkdir(exist_ok=True)


def _relink(data: Path, target: Path) -> None:
    """Point data at target in one step (a link made aside, then renamed over data)."""
    aside = data.with_name(f".data.link-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        aside.unlink()
    aside.symlink_to(target, target_is_directory=True)
    os.replace(aside, data)


def _move_contents(source: Path, target: Path) -> None:
    """Move every entry of source into target (files across file systems are copied, then deleted)."""
    for entry in source.iterdir():
        if entry.name == OWNER_FILE:
            continue
        destination = target / entry.name
        if entry.is_dir() and not entry.is_symlink():
            destination.mkdir(exist_ok=True)
            _move_contents(entry, destination)
            with contextlib.suppress(OSError):
                entry.rmdir()
            continue
        try:
            shutil.move(str(entry), str(destination))
        except FileNotFoundError:
            continue  # a consumer took it meanwhile


def clear_orphans(shm: str | None = None) -> None:
    """Remove memory folders of this user whose bus folder no longer links them (st2ctl start calls it).

    Not on every connection's path: a folder full of messages takes a while
    to delete, and a service's first publish would wait for it.
    """
    base = shm or shm_root(min_free=0)
    if base is None:
        return
    root = Path(base)
    try:
        candidates = list(root.glob(f"{PREFIX}{os.getuid()}-*"))
    except OSError:
        return
    now = time.time()
    for folder in candidates:
        try:
            # A folder in use changes with every message; one being made has no owner yet.
            if now - folder.stat().st_mtime < STALE_AFTER:
                continue
            link = Path((folder / OWNER_FILE).read_text().strip()) / "data"
            if link.is_symlink() and os.readlink(link) == str(folder):
                continue
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                continue
        shutil.rmtree(folder, ignore_errors=True)
        LOG.info("removed %s: its bus folder no longer uses it", folder)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on path (created), held for the block: processes starting together take turns."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
