"""Linux inotify on a few folders: wakes a waiting consumer of the filesystem bus when a file lands in one.

The filesystem bus (st2common.transport.filesystem) keeps each queue's messages in
its own folder, and a consumer follows the folders of the queues it consumes: the
kernel then wakes a process only for messages it will take. A message lands by a
rename (IN_MOVED_TO), or by a write straight into the folder (IN_CLOSE_WRITE);
names starting with a dot are never messages. One inotify instance per watch
(per connection), one watch per folder: the per-user limits are 128 instances and
thousands of watches by default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
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


class FolderWatch:
    """inotify on a set of folders that follows what the consumer takes from; raises OSError without inotify."""

    def __init__(self) -> None:
        # Wake-ups for a file so far; the transport compares it to know if one came.
        self.arrivals = 0
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
            _LIBC.inotify_rm_watch(self.fd, descriptor)  # EINVAL when the folder is gone: nothing to do
        added = False
        for folder in wanted.difference(self._watches):
            os.makedirs(folder, exist_ok=True)
            descriptor = _LIBC.inotify_add_watch(self.fd, os.fsencode(folder), MASK)
            if descriptor < 0:
                raise OSError(ctypes.get_errno(), f"cannot watch {folder}")
            self._watches[folder], self._folders[descriptor] = descriptor, folder
            added = True
        return added

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
                self.arrivals += 1
                return

    def _read(self) -> bool:
        """Consume pending events: True when a file may have landed."""
        # One read per wake-up: select says more is pending, and eventlet's green os.read
        # would block on an empty descriptor instead of raising.
        data = os.read(self.fd, 65536)
        arrived, offset = False, 0
        while offset + _EVENT.size <= len(data):
            descriptor, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + length]
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                arrived = True
            elif mask & IN_IGNORED:
                # The folder was removed (its queue deleted, or swept): the next follow() watches
                # it again, and the waiter looks, in case a message came meanwhile.
                folder = self._folders.pop(descriptor, None)
                if folder is not None:
                    del self._watches[folder]
                    arrived = True
            elif descriptor in self._folders and not name.startswith(b"."):
                arrived = True
        return arrived

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
