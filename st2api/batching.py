"""Execution requests POSTed at the same time stored in one insert (a group commit).

Each POST validates and builds its execution on its own (executions.prepare:
errors are its own); storing it waits only while another batch is being
written. The request that finds nobody writing writes everything queued by
then, itself included, with executions.request_many (one insert, then the
messages of each, in order), and hands the writing on to the first request
that queued meanwhile. One POST alone is written at once; 200 at once take a
few inserts instead of 200, which spares both this process and the database
most of a round trip's CPU per execution.
"""

from __future__ import annotations

import threading

from st2common.models.db.execution import ExecutionDB
from st2common.services import executions
from st2common.transport.publisher import Publisher


class _Waiting:
    """One request's execution and, once its batch is written, the outcome."""

    __slots__ = ("execution", "outcome", "leads", "_done")

    def __init__(self, execution: ExecutionDB) -> None:
        self.execution = execution
        self.outcome: ExecutionDB | BaseException | None = None
        self.leads = False
        # Held until set(): a one-shot event without the Condition a threading.Event builds.
        self._done = threading.Lock()
        self._done.acquire()

    def wait(self) -> None:
        """Block until set() has been called."""
        self._done.acquire()

    def set(self) -> None:
        """Wake the request waiting on this (or let its wait() return at once)."""
        self._done.release()


class RequestBatcher:
    """Stores prepared executions, writing those that arrive together in one batch."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._writing = False

    def store(self, execution: ExecutionDB) -> ExecutionDB:
        """Store one prepared execution and send its messages; its own error is raised here."""
        mine = _Waiting(execution)
        with self._lock:
            self._queue.append(mine)
            leads = mine.leads = not self._writing
            self._writing = True
        if not leads:
            mine.wait()
        if mine.leads:
            self._write()
        if isinstance(mine.outcome, BaseException):
            raise mine.outcome
        return mine.outcome

    def _write(self) -> None:
        """Write what is queued (the caller's own request first among it), then hand the writing on."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            outcomes = executions.request_many(self.publisher, [waiting.execution for waiting in batch])
        except BaseException as exc:  # the batch's requests all get the error; the writing still goes on
            outcomes = [exc] * len(batch)
        with self._lock:
            following = self._queue[0] if self._queue else None
            if following is None:
                self._writing = False
            else:
                following.leads = True
        for waiting, outcome in zip(batch, outcomes):
            waiting.outcome = outcome
            waiting.set()
        if following is not None:
            following.set()
