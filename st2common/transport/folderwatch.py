"""Linux inotify on a few folders: wakes a waiting consumer of the filesystem bus when a file lands in one.

The filesystem bus (st2common.transport.filesystem) keeps each queue's messages in
its own folder, and a consumer follows the folders of the queues it consumes: the
kernel then wakes a process only for messages it will take. A message lands by a
rename (IN_MOVED_TO), or by a write straight into the folder (IN_CLOSE_WRITE);
names starting with a dot are never messages. One inotify instance per watch
(per connection), one watch per folder: the per-user limits are 128 instances and
thousands of watches by default.

The events also say which folder got the file, so a consumer of several queues
asks ``changed()`` which folders it must list again instead of listing them all
(the action runner consumes seven queues, and mostly one has news).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib
import os
import select
import struct
from time import monotonic

# inotify(7): event header, and the masks we use.
_EVENT = struct.Struct("iIII")
IN_CLOSE_WRITE, IN_MOVED_TO, IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR = 0x8, 0x80, 0x4000, 0x8000, 0x1000000
MASK = IN_MOVED_TO | IN_CLOSE_WRITE | IN_ONLYDIR
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if hasattr(os, "O_CLOEXEC") else None
if _LIBC is not None and not hasattr(_LIBC, "inotify_init1"):
    _LIBC = None
# The plain system calls (posix), which eventlet leaves alone: its green os.read stats the descriptor and
# waits on the hub for it to be readable, a second hub round trip after the select that said it is.
_SYS = importlib.import_module(os.name)


class FolderWatch:
    """inotify on a set of folders that follows what the consumer takes from; raises OSError without inotify."""

    def __init__(self) -> None:
        # Wake-ups for a file (and new watches) so far; the transport compares it to know if one came, and
        # a channel notes it at each look to ask changed() which folders had news since.
        self.arrivals = 0
        # Watched folder -> arrivals when a file last landed in it (or when its watch began).
        self.landed: dict[str, int] = {}
        # Arrivals when the kernel last dropped events (its queue overflowed): any folder may have news.
        self.lost = 0
        self._watches: dict[str, int] = {}  # folder -> watch descriptor
        self._folders: dict[int, str] = {}  # watch descriptor -> folder
        self.fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC) if _LIBC else -1
        if self.fd < 0:
            raise OSError(ctypes.get_errno() if _LIBC else errno.ENOSYS, "inotify unavailable")

    @property
    def folders(self) -> frozenset[str]:
        """The folders watched now."""
        return frozenset(self._watches)

    def follow(self, folders) -> bool:
        """Watch folders (created if missing) and no others; True when a watch was added: look before waiting."""
        wanted = set(folders)
        for folder in [folder for folder in self._watches if folder not in wanted]:
            descriptor = self._watches.pop(folder)
            del self._folders[descriptor]
            self.landed.pop(folder, None)
            _LIBC.inotify_rm_watch(self.fd, descriptor)  # EINVAL when the folder is gone: nothing to do
        added = [folder for folder in wanted if folder not in self._watches]
        if added:
            # A file may have landed before the watch stood: its folder counts as news.
            self.arrivals += 1
        for folder in added:
            os.makedirs(folder, exist_ok=True)
            descriptor = _LIBC.inotify_add_watch(self.fd, os.fsencode(folder), MASK)
            if descriptor < 0:
                raise OSError(ctypes.get_errno(), f"cannot watch {folder}")
            self._watches[folder], self._folders[descriptor] = descriptor, folder
            self.landed[folder] = self.arrivals
        return bool(added)

    def changed(self, folders, since: int) -> list[str]:
        """Of folders, those a file may have landed in since arrivals was since (unwatched ones included)."""
        if self.lost > since:
            return list(folders)
        landed = self.landed
        # An unwatched folder (not followed yet, or removed and not watched again) is never known quiet.
        return [folder for folder in folders if landed.get(folder, since + 1) > since]

    def wait(self, timeout: float) -> None:
        """Block (green under eventlet) until a file may have landed in a watched folder, or timeout."""
        deadline = monotonic() + timeout
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                return
            readable, _, _ = select.select([self.fd], [], [], remaining)
            if not readable:
                return
            if self._read():
                return

    def catch_up(self) -> None:
        """Note the events already pending, without waiting: a look is about to begin."""
        # A message published while the consumer was busy (by its own handler, often) is then found
        # by this look, instead of by another one after a wait that returns at once.
        try:
            data = _SYS.read(self.fd, 65536)
        except BlockingIOError:
            return
        self._note(data)

    def _read(self) -> bool:
        """Consume pending events, noting where files landed: True when a file may have landed."""
        # One read per wake-up, when select said the descriptor is readable; it is non-blocking, so
        # a read that finds nothing (catch_up was first) raises instead of waiting.
        try:
            data = _SYS.read(self.fd, 65536)
        except BlockingIOError:
            return False
        return self._note(data)

    def _note(self, data: bytes) -> bool:
        """Note where the events in data say files landed: True when one may have."""
        folders, landed, overflow, offset = self._folders, set(), False, 0
        while offset + _EVENT.size <= len(data):
            descriptor, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + length]
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                overflow = True
            elif mask & IN_IGNORED:
                # The folder was removed (its queue deleted, or swept): the next follow() watches
                # it again, and the waiter looks, in case a message came meanwhile; until then
                # changed() names it, as it does every folder it does not watch.
                folder = folders.pop(descriptor, None)
                if folder is not None:
                    del self._watches[folder]
                    self.landed.pop(folder, None)
                    landed.add(folder)
            elif descriptor in folders and not name.startswith(b"."):
                landed.add(folders[descriptor])
        if not (landed or overflow):
            return False
        self.arrivals += 1
        for folder in landed.intersection(self._watches):
            self.landed[folder] = self.arrivals
        if overflow:
            self.lost = self.arrivals
        return True

    def close(self) -> None:
        """Release the inotify descriptor (and with it every watch)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self._watches.clear()
            self._folders.clear()

    def __del__(self) -> None:
        # A connection dropped without close() must not keep one of the few inotify instances.
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release it with
            pass
