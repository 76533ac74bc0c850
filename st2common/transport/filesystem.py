"""The embedded bus: kombu's filesystem transport, made safe for several processes.

Datasheet (what differs from ``kombu.transport.filesystem``, and why):

- Layout is kombu's: one shared ``data`` folder (in == out) holds every message
  as a file ``<ms>_<uuid>.<queue>.msg``; the ``control`` folder holds one
  ``<exchange>.exchange`` file per exchange with its bindings, so every process
  routes alike. Exchange *types* live in memory only: a process must declare an
  exchange before it publishes to it (the Publisher does).
- Publish writes a temporary file in the ``.work`` subfolder of the data folder
  and renames it into place. Stock kombu creates the file and then writes it,
  so a fast reader can take an empty or half-written message, fail to parse it
  and stop consuming.
- Consume lists the folder once per poll for all the channel's queues and hands
  out up to the prefetch budget, oldest first. Stock kombu lists (and sorts) the
  whole folder once per queue per poll and per message, which is quadratic in
  the backlog.
- A message is claimed by renaming it into ``.work`` (atomic: the same file
  system). Stock kombu moves it to the system temporary folder, which is a copy
  plus a delete when /tmp is another file system, so competing consumers can
  both get it. Writing and claiming in a subfolder keeps the data folder's
  inotify events to one per message: every consumer process watches it.
- Unacked messages live in the consumer's memory only: a killed consumer loses
  them (the services' start-up sweeps re-publish the records). A channel closed
  cleanly puts them back on the queue they came from; stock kombu re-routes them
  through the exchange, which copies them into every other matching queue.
- Broadcast (auto-delete) queues are bindings in the control folder and outlive
  a dead process, collecting messages nobody reads. The Consumer records which
  pid consumes each (``control/broadcast-owners.json``) and unbinds its own on
  stop; ``sweep_dead_processes``, run by every consumer as it starts, unbinds
  those whose process is dead and deletes their messages. It also puts back a
  message a dead consumer had renamed but not yet read, and deletes files a dead
  publisher had not finished writing (both names carry the pid).
- Waking up: on Linux an idle consumer waits on inotify for a message file to
  be renamed into (or written in) the data folder, so a message is picked up at
  once and an idle consumer costs next to nothing; it still looks every
  WATCHED_POLL_INTERVAL for writers inotify cannot see (another host over NFS).
  Without inotify (other systems, the per-user instance limit reached, or the
  ``folder_watch`` transport option false) it polls every
  ``polling_interval``: latency is half of that on average, and each poll costs
  one directory listing. docs/benchmarks.md has the figures.
- While the prefetch is full of unfinished work a consumer looks again every
  SATURATED_INTERVAL, so draining a backlog does not wait a poll per batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import re
import select
import struct
import time
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

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
# inotify(7): event header, and the masks we use.
_EVENT = struct.Struct("iIII")
IN_CLOSE_WRITE, IN_MOVED_TO, IN_Q_OVERFLOW, IN_IGNORED = 0x8, 0x80, 0x4000, 0x8000
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if hasattr(os, "O_CLOEXEC") else None
if _LIBC is not None and not hasattr(_LIBC, "inotify_init1"):
    _LIBC = None
# Where messages are written before they are published and moved when claimed.
WORK_FOLDER = ".work"
# A claimed (being read) or temporary (being written) message file: .<name>.<pid>.claim|tmp
LEFTOVER = re.compile(r"^\.(?P<name>.+\.msg)\.(?P<pid>\d+)\.(?P<kind>claim|tmp)$")
# In the control folder: broadcast queue name -> pid of the process consuming it.
OWNERS_FILE = "broadcast-owners.json"


def queue_of(filename: str) -> str | None:
    """The queue a data file belongs to, or None for anything that is not a ready message."""
    if filename.startswith(".") or not filename.endswith(SUFFIX):
        return None
    return filename.partition(".")[2][: -len(SUFFIX)] or None


class Channel(filesystem.Channel):
    """A filesystem channel with atomic publish and claim, and one listing per poll."""

    def _put(self, queue, payload, **kwargs):
        """Write the message under a hidden name, then rename it where consumers look."""
        # Zero-padded so that name order stays time order when the number of digits grows.
        name = f"{int(monotonic() * 1000):013d}_{uuid.uuid4()}.{queue}{SUFFIX}"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(work_folder(self.data_folder_out), f".{name}.{os.getpid()}.tmp")
        try:
            try:
                handle = open(temporary, "xb")
            except FileNotFoundError:
                os.makedirs(os.path.dirname(temporary), exist_ok=True)
                handle = open(temporary, "xb")
            with handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.rename(temporary, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot write message {final!r}: {exc}") from exc

    def _claim(self, filename: str, queue: str) -> dict | None:
        """Take one message file; None if another consumer was first or the file is unreadable."""
        source = os.path.join(self.data_folder_in, filename)
        claimed = os.path.join(work_folder(self.data_folder_in), f".{filename}.{os.getpid()}.claim")
        try:
            os.rename(source, claimed)
        except FileNotFoundError:
            if os.path.isdir(os.path.dirname(claimed)):
                return None  # another consumer was first
            os.makedirs(os.path.dirname(claimed), exist_ok=True)
            return self._claim(filename, queue)
        try:
            with open(claimed, "rb") as handle:
                raw = handle.read()
        finally:
            os.unlink(claimed)
        try:
            payload = loads(bytes_to_str(raw))
            payload["properties"]["delivery_info"][QUEUE_KEY] = queue
        except (ValueError, KeyError, TypeError) as exc:
            # One bad file must not stop the consumer; it cannot be parsed later either.
            LOG.error("dropped unreadable message file %s: %s", filename, exc)
            return None
        return payload

    def _ready(self, queues) -> list[tuple[str, str]]:
        """(file, queue) of every ready message of queues, oldest first."""
        wanted = set(queues)
        found = []
        for filename in os.listdir(self.data_folder_in):
            queue = queue_of(filename)
            if queue in wanted:
                found.append((filename, queue))
        found.sort()
        return found

    def _get(self, queue):
        """Claim the oldest message of queue (used by basic_get)."""
        for filename, name in self._ready([queue]):
            payload = self._claim(filename, name)
            if payload is not None:
                return payload
        raise Empty()

    def _get_many(self, queues, timeout=None):
        """Deliver up to the prefetch budget from all queues after one listing; Empty if none."""
        budget = self.qos.can_consume_max_estimate() or MAX_BATCH
        delivered = 0
        for filename, queue in self._ready(queues):
            payload = self._claim(filename, queue)
            if payload is None:
                continue
            self.connection._deliver(payload, queue)
            delivered += 1
            if delivered >= budget:
                break
        if not delivered:
            raise Empty()

    def _restore(self, message):
        """Put an unacked message back on the queue it was taken from, and only there."""
        queue = (message.delivery_info or {}).get(QUEUE_KEY)
        if not queue:
            return super()._restore(message)
        payload = message.serializable()
        payload["redelivered"] = True
        self._put(queue, payload)

    def _purge(self, queue):
        """Remove every ready message of queue; how many."""
        count = 0
        for filename, _queue in self._ready([queue]):
            try:
                os.unlink(os.path.join(self.data_folder_in, filename))
                count += 1
            except FileNotFoundError:
                continue
        return count

    def _size(self, queue):
        """How many messages of queue are ready."""
        return len(self._ready([queue]))

    def get_table(self, exchange):
        """The bindings of exchange; a table being created right now is still empty."""
        path = self._exchange_file(exchange)
        try:
            with path.open("rb") as handle:
                filesystem.lock(handle, filesystem.LOCK_SH)
                try:
                    raw = bytes_to_str(handle.read())
                finally:
                    filesystem.unlock(handle)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot read bindings {path}: {exc}") from exc
        try:
            return [filesystem.exchange_queue_t(*row) for row in loads(raw)] if raw.strip() else []
        except (ValueError, TypeError) as exc:
            raise filesystem.ChannelError(f"corrupt bindings file {path}: {exc}") from exc

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        """Add a binding; creating and filling the table is one locked step (stock kombu races)."""
        row = [routing_key or "", pattern or "", queue or ""]
        self.control_folder.mkdir(parents=True, exist_ok=True)
        edit_table(self._exchange_file(exchange), lambda table: table if row in table else [row] + table,
                   default=[])

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        """Purge queue and remove its binding to exchange."""
        self._purge(queue)
        row = [routing_key or "", pattern or "", queue or ""]
        path = self._exchange_file(exchange)
        if path.exists():
            edit_table(path, lambda table: [r for r in table if r != row], default=[])

    def _has_queue(self, queue, **kwargs):
        """A queue exists while some exchange binds it (kombu's answer is always yes)."""
        for path in self.control_folder.glob("*.exchange"):
            if any(row.queue == queue for row in self.get_table(path.name[: -len(".exchange")])):
                return True
        return False


def _wanted(name: bytes, queues: frozenset[str] | None) -> bool:
    """True when the file name is a finished message, for one of queues if given."""
    if not name or name.startswith(b"."):
        return False
    return queues is None or queue_of(os.fsdecode(name)) in queues


class FolderWatch:
    """Linux inotify on the data folder: wakes a consumer when a message file lands in it."""

    def __init__(self, folder: str) -> None:
        # Wake-ups for a wanted message so far; the transport compares it to know if one came.
        self.arrivals = 0
        self.fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC) if _LIBC else -1
        if self.fd < 0:
            raise OSError(ctypes.get_errno() if _LIBC else errno.ENOSYS, "inotify unavailable")
        if _LIBC.inotify_add_watch(self.fd, os.fsencode(folder), IN_MOVED_TO | IN_CLOSE_WRITE) < 0:
            error = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(error, f"cannot watch {folder}")

    def wait(self, timeout: float, queues: frozenset[str] | None = None) -> bool:
        """Block (green under eventlet) until a message may have arrived or timeout passed; False if gone.

        With queues, only a message for one of them counts: every process watches
        the one folder, and waking all of them for each message costs each a listing.
        """
        deadline = monotonic() + timeout
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                return True
            readable, _, _ = select.select([self.fd], [], [], remaining)
            if not readable:
                return True
            arrived, alive = self._read(queues)
            if arrived:
                self.arrivals += 1
            if arrived or not alive:
                return alive

    def _read(self, queues: frozenset[str] | None = None) -> tuple[bool, bool]:
        """Consume pending events: (a visible message file arrived, the watch still stands)."""
        # One read per wake-up: select says more is pending, and eventlet's green os.read
        # would block on an empty descriptor instead of raising.
        data = os.read(self.fd, 65536)
        arrived, alive, offset = False, True, 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            # Temporary and claimed files start with a dot: only finished messages count.
            arrived = arrived or bool(mask & IN_Q_OVERFLOW) or _wanted(name, queues)
            alive = alive and not mask & IN_IGNORED
        return arrived, alive

    def close(self) -> None:
        """Release the inotify descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        # A connection dropped without close() must not keep one of the few inotify instances.
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release it with
            pass


class Transport(filesystem.Transport):
    """kombu's filesystem transport with the Channel above, woken by inotify where there is one."""

    Channel = Channel
    # The URL carries nothing but the scheme; keep it as given, for logs.
    can_parse_url = True
    _watch: FolderWatch | None = None
    _watch_failed = False
    # (when, watch.arrivals, queues) of the last look that found nothing; None when unknown.
    _settled: tuple[float, int, frozenset[str] | None] | None = None

    def drain_events(self, connection, timeout=None):
        """Deliver what the next look finds; wait for the folder to change only when it had nothing.

        The consumer calls this every STOP_CHECK_INTERVAL; while the folder watch
        has seen no message for it since a look found nothing, it does not look
        again (an idle consumer listed the folder twenty times a second).
        """
        started = monotonic()
        while True:
            if not self._nothing_new():
                try:
                    self.cycle.get(self._deliver, timeout=timeout)
                    self._settled = None
                    return
                except Empty:
                    self._settle()
            if timeout is not None and monotonic() - started >= timeout:
                raise TimeoutError() from None
            self._wait(None if timeout is None else timeout - (monotonic() - started))

    def _can_consume(self) -> bool:
        return all(channel.qos.can_consume() for channel in self.channels if channel._consumers)

    def _settle(self) -> None:
        """Remember that a look found nothing, if the watch can tell when that changes."""
        watch = self._watch
        # A full prefetch answers Empty without looking: that proves nothing.
        if watch is not None and self._can_consume():
            self._settled = (monotonic(), watch.arrivals, self._consumed_queues())
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
            # Woken by the kernel; the slow poll only covers writers it cannot see (NFS).
            interval = max(interval, WATCHED_POLL_INTERVAL)
        if remaining is not None:
            interval = max(0.0, min(interval, remaining))
        if watch is None:
            time.sleep(interval)
        elif not watch.wait(interval, self._consumed_queues()):
            LOG.warning("the bus folder watch ended; polling every %ss", self.polling_interval)
            self._close_watch()
            self._watch_failed = True

    def _consumed_queues(self) -> frozenset[str] | None:
        """The queues this connection's channels consume; None (any message) when it consumes none."""
        queues = frozenset(queue for channel in self.channels for queue in channel._active_queues)
        return queues or None

    def _folder_watch(self) -> FolderWatch | None:
        if self._watch is None and not self._watch_failed:
            options = self.client.transport_options
            if not options.get("folder_watch", True):
                self._watch_failed = True
                return None
            folder = options.get("data_folder_in", "data_in")
            try:
                self._watch = FolderWatch(folder)
            except OSError as exc:
                # No inotify (not Linux, or the per-user instance limit is reached): poll.
                LOG.info("cannot watch %s (%s); polling every %ss", folder, exc, self.polling_interval)
                self._watch_failed = True
        return self._watch

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

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
    """Clean up after dead processes; the names of the broadcast queues unbound."""
    _sweep_leftovers(str(data_folder))
    return _sweep_broadcast_queues(Path(control_folder), data_folder)


def work_folder(data_folder: str) -> str:
    """The subfolder of data_folder holding messages being written or read."""
    return os.path.join(data_folder, WORK_FOLDER)


def _sweep_leftovers(data_folder: str) -> None:
    """Put back messages a dead consumer claimed but never read; delete a dead publisher's partial files."""
    # The data folder itself held them before the .work subfolder.
    for folder in (work_folder(data_folder), data_folder):
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for filename in names:
            _sweep_leftover(data_folder, folder, filename)


def _sweep_leftover(data_folder: str, folder: str, filename: str) -> None:
    match = LEFTOVER.match(filename)
    if match and not pid_alive(int(match.group("pid"))):
        path = os.path.join(folder, filename)
        try:
            if match.group("kind") == "claim":
                os.rename(path, os.path.join(data_folder, match.group("name")))
                LOG.info("put back message %s claimed by dead pid %s", match.group("name"), match.group("pid"))
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass  # another process swept it first


def _sweep_broadcast_queues(control_folder: Path, data_folder: str | Path) -> list[str]:
    """Unbind broadcast queues whose owner process is dead and delete their messages."""
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
    for filename in os.listdir(data_folder):
        if queue_of(filename) in dead:
            try:
                os.unlink(os.path.join(data_folder, filename))
            except FileNotFoundError:
                pass
    LOG.info("swept %d broadcast queues of dead processes: %s", len(dead), ", ".join(sorted(dead)))
    return sorted(dead)


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
