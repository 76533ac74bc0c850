"""The live service registry: which worker processes are up, kept current by heartbeats.

A service process registers once per service it runs and gets a worker id
(``<service>@<hostname>:<pid>:<nonce>``; the nonce keeps a restarted process
that reuses a pid from inheriting its predecessor's executions). A green thread
then writes a heartbeat every ``[actionrunner] heartbeat_interval`` seconds,
and a clean stop deletes the record. A worker whose heartbeat is older than
``[actionrunner] worker_dead_after`` seconds is dead: the execution sweep
abandons what it was running, and ``purge`` drops its record.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import uuid

import eventlet

from st2common.exceptions import ConflictError, StackStormBaseException
from st2common.models.db.base import utcnow
from st2common.models.db.worker import WorkerDB
from st2common.persistence.access import Access
from st2common.util.process import pid_alive

LOG = logging.getLogger(__name__)


def make_worker_id(service: str, hostname: str, pid: int) -> str:
    """A worker id unique to this process incarnation."""
    return f"{service}@{hostname}:{pid}:{uuid.uuid4().hex[:8]}"


class WorkerRegistry:
    """Registers this process's services and keeps their heartbeats fresh."""

    def __init__(self, access: Access[WorkerDB], settings, hostname: str | None = None,
                 pid: int | None = None, heartbeat_interval: float | None = None,
                 dead_after: float | None = None) -> None:
        self.access = access
        runner = settings.actionrunner
        self.heartbeat_interval = float(heartbeat_interval or runner.heartbeat_interval)
        self.dead_after = float(dead_after or runner.worker_dead_after)
        self.hostname = hostname or socket.gethostname()
        self.pid = pid or os.getpid()
        # worker id -> (service name, record id); the record id changes if a purge forces a re-register.
        self._workers: dict[str, tuple[str, object]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._beater: eventlet.greenthread.GreenThread | None = None

    # -- this process -------------------------------------------------------------------

    def register(self, service: str) -> str:
        """Record service as running in this process; returns its worker id and starts heartbeats."""
        worker_id = make_worker_id(service, self.hostname, self.pid)
        doc = self._store(worker_id, service)
        with self._lock:
            self._workers[worker_id] = (service, doc.pk)
            if self._beater is None:
                self._stopping.clear()
                self._beater = eventlet.spawn(self._beat_forever)
        LOG.info("registered worker %s", worker_id)
        return worker_id

    def _store(self, worker_id: str, service: str) -> WorkerDB:
        now = utcnow()
        doc = WorkerDB(worker_id=worker_id, service=service, hostname=self.hostname, pid=self.pid,
                       started_at=now, heartbeat=now)
        return self.access.add_or_update(doc, publish=False)

    @property
    def worker_ids(self) -> list[str]:
        """The worker ids registered by this process."""
        with self._lock:
            return list(self._workers)

    def heartbeat(self) -> None:
        """Write one heartbeat for every worker of this process; re-creates a purged record."""
        with self._lock:
            workers = list(self._workers.items())
        for worker_id, (service, record_id) in workers:
            updated = self.access.update_if(record_id, {"worker_id": worker_id}, {"heartbeat": utcnow()},
                                            publish=False)
            if updated is not None:
                continue
            with self._lock:
                if worker_id not in self._workers:
                    continue  # deregistered while this beat was under way
            # A purge dropped us while we were stalled; our executions may already
            # be abandoned, but new work should still see this process as alive.
            LOG.warning("worker %s had been purged as dead; registering it again", worker_id)
            try:
                doc = self._store(worker_id, service)
            except ConflictError as exc:
                doc = self.access.get_by_id(exc.conflict_id) if exc.conflict_id else None
            with self._lock:
                if worker_id in self._workers and doc is not None:
                    self._workers[worker_id] = (service, doc.pk)

    def _beat_forever(self) -> None:
        while not self._stopping.wait(self.heartbeat_interval):
            try:
                self.heartbeat()
            except StackStormBaseException as exc:
                # The database may be briefly away; the next beat tries again.
                LOG.warning("heartbeat failed: %s", exc)

    def deregister(self, worker_id: str | None = None) -> None:
        """Remove one worker (or all of this process's) on a clean stop; heartbeats stop with the last."""
        with self._lock:
            ids = [worker_id] if worker_id else list(self._workers)
            for wid in ids:
                self._workers.pop(wid, None)
            beater = self._beater if not self._workers else None
            if beater is not None:
                self._beater = None
                self._stopping.set()
        if beater is not None:
            beater.wait()
        for wid in ids:
            self.access.delete_by({"worker_id": wid})
            LOG.info("deregistered worker %s", wid)

    # -- every process ------------------------------------------------------------------

    def dead_workers(self, older_than: float | None = None) -> list[WorkerDB]:
        """Workers whose last heartbeat is older than older_than seconds (default worker_dead_after)."""
        return self.access.query(raw={"heartbeat": {"$lt": self._cutoff(older_than)}}, order_by=["heartbeat"])

    def purge(self, older_than: float | None = None) -> int:
        """Delete the records of dead workers; returns how many."""
        count = self.access.delete_by(raw={"heartbeat": {"$lt": self._cutoff(older_than)}})
        if count:
            LOG.info("purged %d dead worker records", count)
        return count

    def _cutoff(self, older_than: float | None) -> datetime.datetime:
        seconds = self.dead_after if older_than is None else older_than
        return utcnow() - datetime.timedelta(seconds=seconds)

    def dead_among(self, worker_ids: set[str], older_than: float | None = None) -> set[str]:
        """Which of worker_ids are dead: unknown, silent for older_than seconds, or a vanished pid here."""
        if not worker_ids:
            return set()
        known = {w.worker_id: w for w in self.access.query(raw={"worker_id": {"$in": sorted(worker_ids)}})}
        cutoff = self._cutoff(older_than)
        dead = set()
        for worker_id in worker_ids:
            worker = known.get(worker_id)
            if worker is None or worker.heartbeat < cutoff:
                dead.add(worker_id)
            elif worker.hostname == self.hostname and not pid_alive(worker.pid):
                dead.add(worker_id)
        return dead
