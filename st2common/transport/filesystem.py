"""The embedded bus: kombu's filesystem transport, made safe for several processes.

Datasheet (what differs from ``kombu.transport.filesystem``, and why):

- Layout: the shared ``data`` folder (in == out) holds one subfolder per queue,
  and each ready message is a file ``data/<queue>/<ns>_<uuid>.msg`` (<ns>: the
  monotonic clock, which all processes share). Stock
  kombu keeps every message of every queue flat in ``data``, so a process that
  watches the folder is woken by every message anyone publishes, and a listing
  of one queue lists them all. The ``control`` folder holds one
  ``<exchange>.exchange`` file per exchange with its bindings, so every process
  routes alike. Exchange *types* live in memory only: a process must declare an
  exchange before it publishes to it (the Publisher does).
- Publish writes a temporary file in the ``.work`` subfolder of the data folder
  and renames it into the queue's folder (created on declare, or on the first
  message). Stock kombu creates the file and then writes it, so a fast reader
  can take an empty or half-written message, fail to parse it and stop
  consuming.
- Routing reads an exchange's bindings file once and keeps the table in
  memory (per process) until the file changes: one ``os.stat`` per publish
  compares inode, size and mtime. Stock kombu opens, locks, reads and parses
  the file for every message. A table read less than RACY_SECONDS after its
  file changed is not kept: a second change within the same mtime tick could
  leave the size alone and go unnoticed.
- Consume lists the folders of the channel's queues and hands out up to the
  prefetch budget, oldest first across them; what a look leaves is handed out
  by the next polls before the folders are listed again. Stock kombu lists
  (and sorts) the whole folder once per queue per poll and per message, which
  is quadratic in the backlog. With a folder watch (below), a look lists only
  the folders a message landed in since the channel's last look, as the
  watch's events tell: the action runner consumes seven queues and mostly one
  has news, and the look after a delivery, which finds nothing, lists none. It
  lists them all at its first look, when the watch lost events (its queue
  overflowed) or does not watch a folder yet, without a watch, and at least
  every WATCHED_POLL_INTERVAL (Channel._folders_to_list has the argument).
- Message files are written and read with the plain system calls, not
  eventlet's green ones, and the Publisher hands a message to the channel
  without kombu's Producer (st2common.transport.publisher).
- A message is claimed by renaming it into ``.work`` (atomic: the same file
  system) as ``.<ns>_<uuid>.<queue>.msg.<pid>.claim``. Stock kombu moves it to
  the system temporary folder, which is a copy plus a delete when /tmp is
  another file system, so competing consumers can both get it. Writing and
  claiming in ``.work`` keeps a queue folder's inotify events to one per message.
- Unacked messages live in the consumer's memory only: a killed consumer loses
  them (the services' start-up sweeps re-publish the records). A channel closed
  cleanly puts them back on the queue they came from; stock kombu re-routes them
  through the exchange, which copies them into every other matching queue.
- Broadcast (auto-delete) queues are bindings in the control folder and outlive
  a dead process, collecting messages nobody reads. The Consumer records which
  pid consumes each (``control/broadcast-owners.json``) and unbinds its own on
  stop; ``sweep_dead_processes``, run by every consumer as it starts, unbinds
  those whose process is dead and removes their folders. It also puts back a
  message a dead consumer had renamed but not yet read, deletes files a dead
  publisher had not finished writing (both names carry the pid and the queue),
  and moves messages left flat in the data folder by an older version into
  their queue folders.
- Waking up: on Linux an idle consumer waits on inotify, one watch per folder
  of a queue it consumes (st2common.transport.folderwatch: one inotify instance
  per connection; its watches follow the consumed queues as they change, and a
  removed folder is watched again), so a message is picked up at once and
  the kernel wakes only the processes that consume its queue. Watching the one
  shared folder instead woke every platform process for every message, each
  paying a read of the events and a look at its queues (docs/benchmarks.md,
  "bystander"). It still lists every folder it consumes at least every
  WATCHED_POLL_INTERVAL, idle or busy, for writers inotify cannot see (another
  host over NFS). Without inotify (other systems, the per-user instance or
  watch limit reached, or the ``folder_watch`` transport option false) it polls
  every ``polling_interval``: latency is half of that on average, and each poll
  costs one listing per consumed queue.
- While the prefetch is full of unfinished work a consumer looks again every
  SATURATED_INTERVAL, so draining a backlog does not wait a poll per batch.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import shutil
import time
import uuid
from collections import deque
from pathlib import Path
from queue import Empty
from time import monotonic, monotonic_ns

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from st2common.transport.folderwatch import FolderWatch
from st2common.util.process import pid_alive

LOG = logging.getLogger(__name__)

SUFFIX = ".msg"
# delivery_info key that remembers which queue a message was taken from.
QUEUE_KEY = "st2_queue"
# Most messages one poll hands out when the channel has no prefetch limit.
MAX_BATCH = 256
# Poll interval while every prefetched message is still being handled.
SATURATED_INTERVAL = 0.001
# With inotify waking consumers, a slow poll only as a safety net.
WATCHED_POLL_INTERVAL = 1.0
# A bindings file changed more recently than this may change again within the same mtime tick
# (a few ms on most file systems), so its table is read again rather than kept.
RACY_SECONDS = 0.1
# Where messages are written before they are published and moved when claimed.
WORK_FOLDER = ".work"
# A claimed (being read) or temporary (being written) message file: .<ns>_<uuid>.<queue>.msg.<pid>.claim|tmp
LEFTOVER = re.compile(r"^\.(?P<name>.+\.msg)\.(?P<pid>\d+)\.(?P<kind>claim|tmp)$")
# In the control folder: broadcast queue name -> pid of the process consuming it.
OWNERS_FILE = "broadcast-owners.json"
# Bindings file path -> ((inode, size, mtime), table), shared by the process's channels.
_TABLES: dict[str, tuple[tuple[int, int, int], list]] = {}


def queue_of(filename: str) -> str | None:
    """The queue named in a flat message file name (<ns>_<uuid>.<queue>.msg), or None."""
    if filename.startswith(".") or not filename.endswith(SUFFIX):
        return None
    return filename.partition(".")[2][: -len(SUFFIX)] or None


@functools.lru_cache(maxsize=4096)
def queue_folder(data_folder: str, queue: str) -> str:
    """The folder holding queue's ready messages."""
    # Cached: a consumer asks for its queues' folders at every look (an invalid name raises, and is not cached).
    # The name becomes a path: nothing that leaves the data folder or hides among its own files.
    if not queue or queue.startswith(".") or os.sep in queue or "\0" in queue:
        raise filesystem.ChannelError(f"invalid queue name for the filesystem bus: {queue!r}")
    return os.path.join(data_folder, queue)


def ready_files(data_folder: str, queue: str) -> list[str]:
    """The file names of queue's ready messages, oldest first."""
    return sorted(_ready_names(data_folder, queue))


def _ready_names(data_folder: str, queue: str) -> list[str]:
    return _listing(queue_folder(data_folder, queue))


def _listing(folder: str) -> list[str]:
    """The names of the ready messages in a queue folder, unsorted."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [name for name in names if name.endswith(SUFFIX) and not name.startswith(".")]


class Channel(filesystem.Channel):
    """A filesystem channel with a folder per queue, atomic publish and claim, and cached bindings."""

    def __init__(self, *args, **kwargs):
        # Exchange name -> its bindings file, checked once (stock kombu builds Paths per message).
        self._table_paths: dict[str, str] = {}
        # What the last look found and has not handed out yet, oldest first, and the queues it looked at.
        self._backlog: deque[tuple[str, str]] = deque()
        self._backlog_queues: frozenset[str] = frozenset()
        # Those queues' folders -> queue names, and (folder watch, its arrivals) as the last look began.
        self._backlog_folders: dict[str, str] = {}
        self._looked: tuple[FolderWatch, int] | None = None
        # When the next look must list every folder, whatever the watch says (writers it cannot see).
        self._full_look_due = 0.0
        super().__init__(*args, **kwargs)

    def _put(self, queue, payload, **kwargs):
        """Write the message under a hidden name, then rename it into the queue's folder."""
        # Nanoseconds, so that one process's messages keep their order; zero-padded so that name order stays
        # time order when the number of digits grows (and names of milliseconds, of older versions, sort first).
        stem = f"{monotonic_ns():019d}_{uuid.uuid4()}"
        folder = queue_folder(self.data_folder_out, queue)
        final = os.path.join(folder, stem + SUFFIX)
        # The queue is in the name so that a sweep knows where a leftover belongs.
        temporary = os.path.join(work_folder(self.data_folder_out), f".{stem}.{queue}{SUFFIX}.{os.getpid()}.tmp")
        try:
            try:
                fd = _SYS.open(temporary, _CREATE_FLAGS, 0o600)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(temporary), exist_ok=True)
                fd = _SYS.open(temporary, _CREATE_FLAGS, 0o600)
            # Straight system calls: a Python file object adds an fstat and an ioctl to each message.
            try:
                data = memoryview(str_to_bytes(dumps(payload)))
                while data:
                    data = data[_SYS.write(fd, data):]
            finally:
                os.close(fd)
            try:
                os.rename(temporary, final)
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                os.rename(temporary, final)
        except OSError as exc:
            _unlink(temporary)
            raise filesystem.ChannelError(f"cannot write message {final!r}: {exc}") from exc

    def _claim(self, filename: str, queue: str) -> dict | None:
        """Take one message file; None if another consumer was first or the file is unreadable."""
        source = os.path.join(self.data_folder_in, queue, filename)
        claimed = os.path.join(work_folder(self.data_folder_in),
                               f".{filename[: -len(SUFFIX)]}.{queue}{SUFFIX}.{os.getpid()}.claim")
        try:
            os.rename(source, claimed)
        except FileNotFoundError:
            if os.path.isdir(os.path.dirname(claimed)):
                return None  # another consumer was first
            os.makedirs(os.path.dirname(claimed), exist_ok=True)
            return self._claim(filename, queue)
        try:
            raw = _read_all(claimed)
        finally:
            os.unlink(claimed)
        try:
            payload = loads(bytes_to_str(raw))
            payload["properties"]["delivery_info"][QUEUE_KEY] = queue
        except (ValueError, KeyError, TypeError) as exc:
            # One bad file must not stop the consumer; it cannot be parsed later either.
            LOG.error("dropped unreadable message file %s of %s: %s", filename, queue, exc)
            return None
        return payload

    def _ready(self, queues) -> list[tuple[str, str]]:
        """(file, queue) of every ready message of queues, oldest first."""
        found = [(name, queue) for queue in set(queues) for name in _ready_names(self.data_folder_in, queue)]
        found.sort()
        return found

    def _ready_news(self, folders: dict[str, str]) -> list[tuple[str, str]]:
        """(file, queue) of the ready messages in those of folders (folder -> queue) that may have news."""
        found = [(name, folders[folder]) for folder in self._folders_to_list(folders) for name in _listing(folder)]
        found.sort()
        return found

    def _folders_to_list(self, folders: dict[str, str]):
        """Those of folders a message may have reached since this channel's last look at them; all when unsure.

        The watch counts its wake-ups and stamps each folder with the count when a
        file landed in it; a look reads the events already pending, then notes the
        count. A message that lands after a folder was listed is read from the kernel
        after that note, so its folder is stamped later than it; one read before the
        note landed before the listing, which sees it. Whatever the look leaves stays
        in the backlog. So a folder stamped no later than the note holds nothing new.
        The watch names the folders it cannot vouch for (not watched yet, removed,
        events lost to an overflow), and every WATCHED_POLL_INTERVAL the look lists
        all of them anyway.
        """
        watch, last = self.connection._watch, self._looked
        if watch is not None:
            watch.catch_up()
        self._looked = None if watch is None else (watch, watch.arrivals)
        now = monotonic()
        if watch is None or last is None or last[0] is not watch or now >= self._full_look_due:
            self._full_look_due = now + WATCHED_POLL_INTERVAL
            return folders
        return watch.changed(folders, last[1])

    def _get(self, queue):
        """Claim the oldest message of queue (used by basic_get)."""
        for filename, name in self._ready([queue]):
            payload = self._claim(filename, name)
            if payload is not None:
                return payload
        raise Empty()

    def _get_many(self, queues, timeout=None):
        """Deliver up to the prefetch budget from all queues, oldest first; Empty if none."""
        budget = self.qos.can_consume_max_estimate() or MAX_BATCH
        delivered = 0
        backlog = self._backlog_of(queues)
        while backlog and delivered < budget:
            filename, queue = backlog.popleft()
            payload = self._claim(filename, queue)
            if payload is None:
                continue
            self.connection._deliver(payload, queue)
            delivered += 1
        if not delivered:
            raise Empty()

    def _backlog_of(self, queues) -> deque[tuple[str, str]]:
        """The ready messages of queues, oldest first: what the last look left, else a new look.

        Listing a queue folder costs in proportion to its backlog; handing a
        backlog out one prefetch at a time, a look per batch made the drain
        quadratic. What lands meanwhile is newer than what the look left (file
        names start with the time), so it comes after it either way. A name
        another consumer took in between fails to claim and is skipped.
        """
        key = frozenset(queues)
        if key != self._backlog_queues:
            # New queues: what the watch says since the last look does not cover their folders.
            self._backlog_queues, self._looked = key, None
            self._backlog_folders = {queue_folder(self.data_folder_in, queue): queue for queue in key}
            self._backlog = deque(self._ready_news(self._backlog_folders))
        elif not self._backlog:
            self._backlog = deque(self._ready_news(self._backlog_folders))
        return self._backlog

    def _restore(self, message):
        """Put an unacked message back on the queue it was taken from, and only there."""
        queue = (message.delivery_info or {}).get(QUEUE_KEY)
        if not queue:
            return super()._restore(message)
        payload = message.serializable()
        payload["redelivered"] = True
        self._put(queue, payload)

    def _new_queue(self, queue, **kwargs):
        """Make the queue's folder, so that consumers can watch it before the first message."""
        try:
            os.makedirs(queue_folder(self.data_folder_out, queue), exist_ok=True)
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot create queue {queue!r}: {exc}") from exc

    def _purge(self, queue):
        """Remove every ready message of queue; how many."""
        folder = queue_folder(self.data_folder_in, queue)
        return sum(_unlink(os.path.join(folder, name)) for name in _ready_names(self.data_folder_in, queue))

    def _size(self, queue):
        """How many messages of queue are ready."""
        return len(_ready_names(self.data_folder_in, queue))

    def _table_path(self, exchange: str) -> str:
        path = self._table_paths.get(exchange)
        if path is None:
            path = self._table_paths[exchange] = str(self._exchange_file(exchange))
        return path

    def get_table(self, exchange):
        """The bindings of exchange, read again only when its file changed; a table being created is empty."""
        path = self._table_path(exchange)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot read bindings {path}: {exc}") from exc
        cached = _TABLES.get(path)
        if cached is not None and cached[0] == (stat.st_ino, stat.st_size, stat.st_mtime_ns):
            return cached[1]
        return read_table(path)

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        """Add a binding; creating and filling the table is one locked step (stock kombu races)."""
        row = [routing_key or "", pattern or "", queue or ""]
        self.control_folder.mkdir(parents=True, exist_ok=True)
        edit_table(Path(self._table_path(exchange)), lambda table: table if row in table else [row] + table,
                   default=[])

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        """Purge queue, remove its binding to exchange, and its folder once empty."""
        self._purge(queue)
        row = [routing_key or "", pattern or "", queue or ""]
        path = Path(self._table_path(exchange))
        if path.exists():
            edit_table(path, lambda table: [r for r in table if r != row], default=[])
        try:
            os.rmdir(queue_folder(self.data_folder_in, queue))
        except OSError:
            pass  # gone already, or a message came in meanwhile: keep it

    def _has_queue(self, queue, **kwargs):
        """A queue exists while some exchange binds it (kombu's answer is always yes)."""
        for path in self.control_folder.glob("*.exchange"):
            if any(row.queue == queue for row in self.get_table(path.name[: -len(".exchange")])):
                return True
        return False


def read_table(path: str) -> list:
    """Read an exchange's bindings file under a shared lock, and keep the table if the file is settled."""
    try:
        with open(path, "rb") as handle:
            filesystem.lock(handle, filesystem.LOCK_SH)
            try:
                raw = bytes_to_str(handle.read())
                # Taken under the lock, so it describes exactly what was read.
                stat = os.fstat(handle.fileno())
            finally:
                filesystem.unlock(handle)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise filesystem.ChannelError(f"cannot read bindings {path}: {exc}") from exc
    try:
        table = [filesystem.exchange_queue_t(*row) for row in loads(raw)] if raw.strip() else []
    except (ValueError, TypeError) as exc:
        raise filesystem.ChannelError(f"corrupt bindings file {path}: {exc}") from exc
    if time.time_ns() - stat.st_mtime_ns > RACY_SECONDS * 1e9:
        _TABLES[path] = ((stat.st_ino, stat.st_size, stat.st_mtime_ns), table)
    else:
        _TABLES.pop(path, None)
    return table


class Transport(filesystem.Transport):
    """kombu's filesystem transport with the Channel above, woken by inotify where there is one."""

    Channel = Channel
    # The URL carries nothing but the scheme; keep it as given, for logs.
    can_parse_url = True
    _watch: FolderWatch | None = None
    _watch_failed = False
    # (when, watch.arrivals, queues) of the last look that found nothing; None when unknown.
    _settled: tuple[float, int, frozenset[str] | None] | None = None
    # (queues, their folders) as last asked for: the consumed queues rarely change.
    _folders_of: tuple[frozenset[str] | None, frozenset[str]] = (None, frozenset())

    def drain_events(self, connection, timeout=None):
        """Deliver what the next look finds; wait for a queue folder to change only when it had nothing.

        The consumer calls this every STOP_CHECK_INTERVAL; while the folder watch
        has seen no message for it since a look found nothing, it does not look
        again (an idle consumer listed the folder twenty times a second).
        """
        started = monotonic()
        while True:
            if not self._nothing_new():
                # Counted before the looks: one channel's look reads the events pending for all of them.
                arrivals = self._watch.arrivals if self._watch is not None else 0
                try:
                    self.cycle.get(self._deliver, timeout=timeout)
                    self._settled = None
                    return
                except Empty:
                    self._settle(arrivals)
            if timeout is not None and monotonic() - started >= timeout:
                raise TimeoutError() from None
            self._wait(None if timeout is None else timeout - (monotonic() - started))

    def _can_consume(self) -> bool:
        return all(channel.qos.can_consume() for channel in self.channels if channel._consumers)

    def _settle(self, arrivals: int) -> None:
        """Remember that the looks begun at arrivals found nothing, if the watch can tell when that changes."""
        watch = self._watch
        queues = self._consumed_queues()
        # A full prefetch answers Empty without looking: that proves nothing. Nor does a look
        # at queues whose folders are not all watched yet.
        if watch is not None and self._can_consume() and watch.folders == self._queue_folders(queues):
            self._settled = (monotonic(), arrivals, queues)
        else:
            self._settled = None

    def _nothing_new(self) -> bool:
        """True when looking now would find what the last look found: nothing."""
        settled, watch = self._settled, self._watch
        if settled is None or watch is None:
            return False
        since, arrivals, queues = settled
        return (watch.arrivals == arrivals and queues == self._consumed_queues()
                and monotonic() - since < WATCHED_POLL_INTERVAL and self._can_consume())

    def _wait(self, remaining: float | None) -> None:
        interval = self.polling_interval or 0
        watch = self._folder_watch()
        if any(channel._consumers and not channel.qos.can_consume() for channel in self.channels):
            # The prefetch is full of work and a backlog may wait: look again as soon as
            # handlers ack, instead of a whole interval later.
            watch, interval = None, min(interval, SATURATED_INTERVAL)
        elif watch is not None:
            try:
                if watch.follow(self._queue_folders(self._consumed_queues())):
                    # A message may have landed before the new watch stood: look first.
                    return
            except OSError as exc:
                # The per-user watch limit, most likely.
                LOG.warning("cannot watch the bus queue folders (%s); polling every %ss", exc,
                            self.polling_interval)
                self._close_watch()
                self._watch_failed = True
                watch = None
            else:
                # Woken by the kernel; the slow poll only covers writers it cannot see (NFS).
                interval = max(interval, WATCHED_POLL_INTERVAL)
        if remaining is not None:
            interval = max(0.0, min(interval, remaining))
        if watch is None:
            time.sleep(interval)
        else:
            watch.wait(interval)

    def _consumed_queues(self) -> frozenset[str] | None:
        """The queues this connection's channels consume; None when it consumes none."""
        queues = frozenset(queue for channel in self.channels for queue in channel._active_queues)
        return queues or None

    def _queue_folders(self, queues: frozenset[str] | None) -> frozenset[str]:
        known, folders = self._folders_of
        if queues != known:
            data_folder = self.client.transport_options.get("data_folder_in", "data_in")
            folders = frozenset(queue_folder(data_folder, queue) for queue in queues or ())
            self._folders_of = (queues, folders)
        return folders

    def _folder_watch(self) -> FolderWatch | None:
        if self._watch is None and not self._watch_failed:
            options = self.client.transport_options
            if not options.get("folder_watch", True):
                self._watch_failed = True
                return None
            try:
                self._watch = FolderWatch()
            except OSError as exc:
                # No inotify (not Linux, or the per-user instance limit is reached): poll.
                LOG.info("cannot watch the bus folders (%s); polling every %ss", exc, self.polling_interval)
                self._watch_failed = True
        return self._watch

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._settled = None

    def close_connection(self, connection):
        """Close the channels and the folder watch."""
        try:
            super().close_connection(connection)
        finally:
            self._close_watch()

    def as_uri(self, uri, include_password=False, mask="**"):
        """The URL as configured."""
        return "filesystem://"


def own_broadcast_queues(control_folder: str | Path, queues: list[str], owned: bool = True) -> None:
    """Record (or forget) that this process consumes queues, for sweep_dead_processes."""
    def change(owners: dict) -> dict:
        for queue in queues:
            if owned:
                owners[queue] = os.getpid()
            else:
                owners.pop(queue, None)
        return owners
    if queues:
        edit_table(Path(control_folder) / OWNERS_FILE, change, default={})


def sweep_dead_processes(control_folder: str | Path, data_folder: str | Path) -> list[str]:
    """Clean up after dead processes and older versions; the names of the broadcast queues unbound."""
    _sweep_leftovers(str(data_folder))
    return _sweep_broadcast_queues(Path(control_folder), str(data_folder))


def work_folder(data_folder: str) -> str:
    """The subfolder of data_folder holding messages being written or read."""
    return os.path.join(data_folder, WORK_FOLDER)


def _sweep_leftovers(data_folder: str) -> None:
    """Put back messages a dead consumer claimed but never read; delete a dead publisher's partial files.

    Also moves the ready messages an older version left flat in the data folder into
    their queue folders; its claimed and temporary files lie there too.
    """
    for folder in (work_folder(data_folder), data_folder):
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                _sweep_leftover(data_folder, folder, entry.name)
            elif folder == data_folder and queue_of(entry.name) and entry.is_file(follow_symlinks=False):
                _put_back(data_folder, entry.path, entry.name)


def _sweep_leftover(data_folder: str, folder: str, filename: str) -> None:
    match = LEFTOVER.match(filename)
    if match and not pid_alive(int(match.group("pid"))):
        path = os.path.join(folder, filename)
        if match.group("kind") == "claim":
            if _put_back(data_folder, path, match.group("name")):
                LOG.info("put back message %s claimed by dead pid %s", match.group("name"), match.group("pid"))
        else:
            _unlink(path)


# Message files are regular files on a local file system, never worth a green wait: eventlet's os.open
# tells the hub of each new descriptor and its os.read and os.write stat the descriptor first, which
# together cost as much as the system calls themselves. os takes them from this module (posix, or nt),
# which eventlet leaves alone.
_SYS = importlib.import_module(os.name)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_READ_CHUNK = 1 << 16


def _read_all(path: str) -> bytes:
    """The whole file, read with plain system calls (see Channel._put)."""
    fd = _SYS.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        chunks = []
        while True:
            chunk = _SYS.read(fd, _READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _put_back(data_folder: str, path: str, flat_name: str) -> bool:
    """Move the message at path, named <ns>_<uuid>.<queue>.msg, into its queue's folder; False if gone."""
    stem, _, _ = flat_name.partition(".")
    try:
        folder = queue_folder(data_folder, queue_of(flat_name) or "")
    except filesystem.ChannelError:
        LOG.warning("left alone a message file for no valid queue: %s", path)
        return False
    try:
        try:
            os.rename(path, os.path.join(folder, stem + SUFFIX))
        except FileNotFoundError:
            if not os.path.exists(path):
                return False  # another process swept it first
            os.makedirs(folder, exist_ok=True)
            os.rename(path, os.path.join(folder, stem + SUFFIX))
    except FileNotFoundError:
        return False
    return True


def _sweep_broadcast_queues(control_folder: Path, data_folder: str) -> list[str]:
    """Unbind broadcast queues whose owner process is dead and remove their folders."""
    dead: set[str] = set()

    def forget_dead(owners: dict) -> dict:
        dead.update(queue for queue, pid in owners.items() if not pid_alive(pid))
        return {queue: pid for queue, pid in owners.items() if queue not in dead}

    try:
        edit_table(control_folder / OWNERS_FILE, forget_dead, default={})
        if not dead:
            return []
        for path in sorted(control_folder.glob("*.exchange")):
            edit_table(path, lambda table: [row for row in table if row[2] not in dead], default=[])
    except filesystem.ChannelError as exc:
        LOG.warning("cannot sweep broadcast queues: %s", exc)
        return []
    for queue in dead:
        try:
            shutil.rmtree(queue_folder(data_folder, queue), ignore_errors=True)
        except filesystem.ChannelError:
            continue
    LOG.info("swept %d broadcast queues of dead processes: %s", len(dead), ", ".join(sorted(dead)))
    return sorted(dead)


def _unlink(path: str) -> int:
    """Remove a file; 1 if this call removed it, 0 if it was gone."""
    try:
        os.unlink(path)
        return 1
    except FileNotFoundError:
        return 0


def edit_table(path: Path, change, default):
    """Rewrite a JSON control file through change() under an exclusive lock, as kombu locks them."""
    try:
        # Created if missing and locked before anything is read, so two processes binding at
        # once never see each other's empty, half-made file.
        with path.open("ab+", buffering=0) as handle:
            filesystem.lock(handle, filesystem.LOCK_EX)
            try:
                handle.seek(0)
                raw = bytes_to_str(handle.read())
                before = loads(raw) if raw.strip() else default
                after = change(dict(before) if isinstance(before, dict) else list(before))
                if after != before or not raw.strip():
                    handle.seek(0)
                    handle.truncate()
                    handle.write(str_to_bytes(dumps(after)))
            finally:
                filesystem.unlock(handle)
    except (OSError, ValueError, TypeError) as exc:
        raise filesystem.ChannelError(f"cannot update {path}: {exc}") from exc
