"""The dispatcher: runs scheduled executions in this process, stops canceled ones.

| consumes                                      | does                                                |
| --------------------------------------------- | --------------------------------------------------- |
| liveaction.status ``scheduled``               | scheduled -> running (compare-and-set, runner_info  |
| (queue actionrunner.work, copies compete;     | {hostname, pid, worker_id}; a request handed over   |
| or a request handed over by this process's    | goes requested -> scheduled -> running in that one  |
| scheduler)                                    | write), renders the final parameters, runs the      |
|                                               | runner in a green thread,                           |
|                                               | stores its output chunks, records the end status    |
|                                               | and the (size-limited) result                       |
| liveaction.status ``canceling``               | this process's run of it: runner.cancel() (kills    |
| (a queue of this process: every copy sees it) | the process tree); run() returns, -> canceled       |
| liveaction.status ``canceling``               | nobody runs it (never started, or its worker is     |
| (queue actionrunner.cancel, copies compete)   | dead): canceling -> canceled                        |

A request the scheduler did not read (st2actionrunner.scheduler.Request) is
claimed on the revision it was stored with as well as its status; a claim
that misses publishes the request again with its id alone, so the scheduler
reads the record and does what its status now calls for (usually nothing:
it was canceled or another copy runs it).

The record a run's end wrote is handed to this process's notifier
(``completed``), which then needs no read when the update's message comes to
it here.

The message is acked once the run is in the pool, so a long action never
holds a consumer slot; from there the record is the truth (a process that dies
leaves a scheduled record the sweep re-publishes, or a running one it abandons). A runner that raises, or returns
something that is not a RunResult, fails the execution with the error and the
traceback in its result; nothing is left ``running``. A runner without a
cancel() of its own is stopped by killing its green thread; one with a cancel()
that does not return within CANCEL_GRACE seconds is killed the same way.

On stop (``shutdown``), as StackStorm's graceful shutdown: while other action
runners are alive, wait up to ``[actionrunner] exit_still_active_check`` seconds
for runs in progress to end; whatever still runs then is marked ``abandoned``
and its process tree is killed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import eventlet
from eventlet.event import Event
from eventlet.greenthread import GreenThread
from greenlet import GreenletExit

from st2common import masking
from st2common import parameters as params
from st2common import statuses
from st2common.exceptions import NotFoundError, StackStormBaseException, StaleRecordError, TransitionError
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.pack import PackDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.persistence.batches import Loader
from st2common.persistence.cache import RecordCache
from st2common.runners import registry
from st2common.runners.base import ActionRunner, RunContext, RunResult
from st2common.services import configs, executions, keyvalues, tokens
from st2common.templating import st2kv_context
from st2common.transport.consumer import Handler
from st2common.transport.publisher import Publisher
from st2common.util.process import pid_alive

LOG = logging.getLogger(__name__)

WORK_QUEUE = "actionrunner.work"
CANCEL_QUEUE = "actionrunner.cancel"
# Seconds a runner's own cancel() gets before its green thread is killed.
CANCEL_GRACE = 3.0
# Attempts (with back-off) at recording a run's end while the database is away.
_FINISH_ATTEMPTS = 30
_CLAIMABLE = (statuses.SCHEDULED, statuses.REQUESTED, statuses.DELAYED)
ABANDONED_ERROR = "the action runner stopped while the execution was {status}"
# Where each pack lives, for runs with an entry point (forgotten on pack writes here, else after 1 s).
PACK_PATHS = RecordCache("pack paths", (PackDB,), 1.0)
# Runners whose actions are processes that may call the API back: they get a token (ST2_ACTION_AUTH_TOKEN).
PROCESS_RUNNERS = frozenset({"local-shell-cmd", "local-shell-script", "python-script",
                             "remote-shell-cmd", "remote-shell-script"})


def load(access: Access[ExecutionDB], execution_id: Any) -> ExecutionDB | None:
    """The execution with that id, or None."""
    try:
        return access.get_by_id(execution_id)
    except NotFoundError:
        return None


def runner_info(worker_id: str) -> dict[str, Any]:
    """Who runs an execution: this process, under worker_id."""
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "worker_id": worker_id}


@dataclass(eq=False)
class Run:
    """One execution this process is running."""

    execution_id: str
    runner: ActionRunner | None = None
    thread: GreenThread | None = None
    in_runner: bool = False
    cancel_requested: bool = False


class Dispatcher:
    """Runs scheduled executions in a green pool and stops the ones asked to cancel."""

    def __init__(self, settings, publisher: Publisher, worker_id: str,
                 owner_alive: Callable[[dict], bool] | None = None, pool_size: int | None = None,
                 completed: Callable[[ExecutionDB], None] | None = None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.worker_id = worker_id
        self.runner_info = runner_info(worker_id)
        self.access = executions.access(publisher)
        # Scheduled executions that arrive together (a backlog) are read in one query.
        self.loader = Loader(self.access)
        self.pool = eventlet.GreenPool(pool_size or settings.actionrunner.actions_pool_size)
        self.running: dict[str, Run] = {}
        self._owner_alive = owner_alive or self._same_host_owner_alive
        self._pack_access = Access(PackDB)
        self.datastore = keyvalues.Datastore(settings)
        # Called with each record a run's end wrote (the notifier's hand_over).
        self.completed = completed
        # Requests waiting in has_room for a run to end: each run that ends wakes one.
        self._room_waiters: deque[Event] = deque()

    def handlers(self) -> list[Handler]:
        """The consumers' handlers: scheduled work, shared cancels, and this process's cancels."""
        topology = self.publisher.topology
        broadcast = topology.broadcast_queue(executions.WORK_EXCHANGE, statuses.CANCELING,
                                             owner=self.worker_id.replace("@", ".").replace(":", "."))
        return [_WorkHandler(self, topology.work_queue(WORK_QUEUE)),
                _CancelHandler(self, topology.work_queue(CANCEL_QUEUE), shared=True),
                _CancelHandler(self, broadcast, shared=False)]

    # -- starting a run -------------------------------------------------------------------

    def has_room(self, wait: float = 0.0) -> bool:
        """True when the pool can start another run now, after waiting up to wait seconds for a run to end."""
        deadline = time.monotonic() + wait
        while self.pool.free() <= 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ended = Event()
            self._room_waiters.append(ended)
            with eventlet.Timeout(remaining, False):
                ended.wait()
            if not ended.ready():
                self._room_waiters.remove(ended)
        return True

    def _run_ended(self, _thread: GreenThread) -> None:
        # Linked after the pool's own callback: the run's slot is free again.
        while self._room_waiters:
            waiter = self._room_waiters.popleft()
            if not waiter.ready():
                waiter.send()
                return

    def start(self, execution: ExecutionDB, expected: dict[str, Any] | None = None) -> bool:
        """Claim an execution and run it in the pool (waits for a free slot); False if not claimable.

        A scheduled one comes from the bus; a requested or delayed one from the
        scheduler of this process, and is claimed through scheduled in one write.
        A request the scheduler did not read comes as its stand-in (pk, status
        and log: st2actionrunner.scheduler.Request), with expected, the further
        values the claim is conditional on.
        """
        execution_id = str(execution.pk)
        if execution.status not in _CLAIMABLE or execution_id in self.running:
            return False
        run = Run(execution_id)
        self.running[execution_id] = run
        run.thread = self.pool.spawn(self._claim_and_run, run, execution, expected)
        run.thread.link(self._run_ended)
        # The claim goes out now, before the caller's message is acked and its consumer looks for more.
        eventlet.sleep(0)
        return True

    def _claim_and_run(self, run: Run, execution: ExecutionDB, expected: dict[str, Any] | None = None) -> None:
        try:
            try:
                via = () if execution.status == statuses.SCHEDULED else (statuses.SCHEDULED,)
                execution = executions.update_status(self.access, execution, statuses.RUNNING, publish_work=False,
                                                     via=via, expected=expected, runner_info=self.runner_info)
            except (StaleRecordError, TransitionError) as exc:
                LOG.debug("execution %s not claimed: %s", run.execution_id, exc)
                if expected:
                    # Changed since its request was stored: the scheduler reads what it is now.
                    self.publisher.publish(executions.WORK_EXCHANGE, statuses.REQUESTED, {"id": run.execution_id})
                return
            except StackStormBaseException as exc:
                # The write may have landed before the bus or the database failed: run it
                # only if it is ours now, else it stays for the sweep.
                LOG.warning("execution %s: claim interrupted: %s", run.execution_id, exc)
                execution = load(self.access, run.execution_id)
                if (execution is None or execution.status != statuses.RUNNING
                        or (execution.runner_info or {}).get("worker_id") != self.worker_id):
                    return
            LOG.info("execution %s of %s running", run.execution_id, execution.action_ref)
            result = self._result_of(run, execution)
            # The clear secrets the run saw never reach its stored result (see st2common/masking.py).
            result = masking.release(run.execution_id, result)
            while True:
                try:
                    self._finish(run, execution, result)
                    break
                except GreenletExit:
                    continue  # a kill meant for the runner arrived late; the end must still be written
        finally:
            self.running.pop(run.execution_id, None)

    def _result_of(self, run: Run, execution: ExecutionDB) -> RunResult:
        """Run the runner; whatever goes wrong becomes a failed (or canceled) result."""
        try:
            result = self._execute(run, execution)
            if not isinstance(result, RunResult):
                raise TypeError(f"runner returned {type(result).__name__}, not a RunResult")
            return result
        except GreenletExit:
            LOG.info("execution %s: run stopped", run.execution_id)
            return RunResult(statuses.CANCELED)
        except Exception as exc:  # a runner bug must fail the execution, never leave it running
            LOG.warning("execution %s: runner failed: %s", run.execution_id, exc)
            return RunResult(statuses.FAILED, {"error": str(exc) or type(exc).__name__,
                                               "traceback": traceback.format_exc()})

    def _execute(self, run: Run, execution: ExecutionDB) -> RunResult:
        writer = self._output_writer(execution)
        try:
            return self._run_runner(run, execution, writer or (lambda stream, data: None))
        finally:
            if writer is not None:
                # Every chunk is stored before the end is recorded.
                writer.close()

    def _run_runner(self, run: Run, execution: ExecutionDB, output: Callable[[str, str], None]) -> RunResult:
        runner_type = (execution.runner or {}).get("name") or (execution.action or {}).get("runner_type")
        token, stored = None, None
        if runner_type in PROCESS_RUNNERS and self.settings.auth.enable:
            # Stored while the run's context is built; waited for before the action can use it.
            token, stored = self._execution_token(execution)
        try:
            runner = registry.resolve(runner_type)(self._context(execution, output, token))
            if stored is not None:
                stored.wait()
            return self._run_started(run, runner)
        finally:
            if token:
                # Off the run's path: its end is recorded without waiting for the delete.
                eventlet.spawn_n(_revoke, run.execution_id, token, stored)

    def _execution_token(self, execution: ExecutionDB) -> tuple[str, GreenThread]:
        """A token of the execution's user for the action's own API calls, as StackStorm issues one,
        and the green thread storing it."""
        user = (execution.context or {}).get("user") or self.settings.system_user.user
        token, raw = tokens.prepare(user, self.settings.auth.service_token_ttl, service=True,
                                    metadata={"service": "actionrunner", "execution_id": str(execution.pk)})
        return raw, eventlet.spawn(tokens.store, token)

    def _run_started(self, run: Run, runner) -> RunResult:
        run.runner = runner
        if run.cancel_requested:
            return RunResult(statuses.CANCELED)
        result: RunResult | None = None
        try:
            runner.pre_run()
            if run.cancel_requested:
                return RunResult(statuses.CANCELED)
            run.in_runner = True
            result = runner.run()
            return result
        finally:
            run.in_runner = False
            try:
                runner.post_run(result if isinstance(result, RunResult) else RunResult(statuses.FAILED))
            except Exception:  # clean-up trouble must not change how the run ended
                LOG.exception("execution %s: post_run failed", run.execution_id)

    def _context(self, execution: ExecutionDB, output: Callable[[str, str], None],
                 token: str | None = None) -> RunContext:
        action = execution.action or {}
        runner = execution.runner or {}
        schema = params.ParameterSchema.build(runner.get("runner_parameters"), action.get("parameters"),
                                              execution.action_ref)
        run_context = execution.context or {}
        # The pack's config for the run's user; one that failed validation fails the run with its message.
        user = run_context.get("api_user") or run_context.get("user")
        pack_config = configs.load(action.get("pack") or "", user, self.settings)
        config = pack_config.values
        # The real datastore, so decrypt_kv templates (kept unrendered at request time) decrypt here.
        values = params.render_final(schema, execution.parameters, execution.context, config,
                                     extra={**st2kv_context(self.datastore, user), **self._trigger_scope(execution)})
        # Output chunks (and, while it runs, log lines) are scrubbed of the run's clear secrets.
        secrets = [*pack_config.secret_values(), *([token] if token else [])]
        output = masking.guard(str(execution.pk), schema, values, secrets).output(output)
        runner_parameters, action_parameters = schema.split(values)
        return RunContext(
            execution_id=str(execution.pk),
            action_ref=execution.action_ref,
            pack=action.get("pack", ""),
            entry_point=action.get("entry_point") or "",
            # Only entry points live in the pack's folder; other runners never read it.
            pack_path=self._pack_path(action.get("pack")) if action.get("entry_point") else None,
            runner_parameters=runner_parameters,
            action_parameters=action_parameters,
            parameters_schema=schema.action_definitions(),
            context=dict(execution.context or {}),
            config=config,
            output=output,
            publish=self.publisher.publish,
            settings=self.settings,
            auth_token=token,
            record=execution,
        )

    def _trigger_scope(self, execution: ExecutionDB) -> dict[str, Any]:
        """``trigger`` for a rule's parameter held back for the run (it decrypts): the instance's payload."""
        instance_id = ((execution.context or {}).get("trigger_instance") or {}).get("id")
        held = [value for value in (execution.parameters or {}).values() if masking.decrypts(value)]
        if not instance_id or not any("trigger" in repr(value) for value in held):
            return {}
        instance = TriggerInstanceDB.objects(pk=instance_id).only("payload").first()
        return {"trigger": dict(instance.payload or {})} if instance is not None else {}

    def _pack_path(self, pack: str | None) -> Path | None:
        if not pack:
            return None
        return PACK_PATHS.get(pack, lambda: self._read_pack_path(pack))

    def _read_pack_path(self, pack: str) -> Path | None:
        record = self._pack_access.get(ref=pack)
        return Path(record.path) if record is not None and record.path else None

    def _output_writer(self, execution: ExecutionDB) -> "OutputWriter | None":
        if not self.settings.actionrunner.stream_output:
            return None
        return OutputWriter(self.publisher, execution)

    # -- ending a run ---------------------------------------------------------------------

    def _finish(self, run: Run, execution: ExecutionDB, result: RunResult) -> None:
        """Record how the run ended; retried while the database is away, so nothing stays running."""
        status = result.status
        if result.recorded and status == execution.status:
            return
        value, size = executions.limit_result(result.result, self.settings.actionrunner.max_result_size)
        if status not in statuses.EXECUTION_STATUSES:
            status, value = statuses.FAILED, {"error": f"runner returned an unknown status {status!r}",
                                              "result": value}
        delay = 0.1
        for _ in range(_FINISH_ATTEMPTS):
            try:
                if self._record(execution, status, value, size):
                    return
                execution = self.access.get_by_id(execution.pk)
            except StackStormBaseException as exc:
                LOG.warning("execution %s: cannot record the end yet: %s", execution.pk, exc)
                eventlet.sleep(delay)
                delay = min(delay * 2, 2.0)
        LOG.error("execution %s: gave up recording its end (%s)", execution.pk, status)

    def _record(self, execution: ExecutionDB, status: str, value: Any, size: int) -> bool:
        """One attempt; False when the record changed underneath and must be re-read."""
        current = execution.status
        if current in statuses.COMPLETED:
            LOG.info("execution %s already %s; %s result not recorded", execution.pk, current, status)
            return True
        if current == statuses.CANCELING:
            status = statuses.CANCELED
        if status == current:
            # An asynchronous runner (a workflow) keeps it running: store the result alone. Its update
            # goes where a workflow's go: an action chain starts from it (its chain record exists now).
            updated = self.access.update_if(execution.pk, {"status": current},
                                            {"result": value, "result_size": size}, publish=False)
            if updated is None:
                return False
            executions.publish_update(self.access, updated, current)
            return True
        if not statuses.is_transition_valid("execution", current, status):
            value = {"error": f"runner returned status {status!r}, which cannot follow {current!r}",
                     "result": value}
            status = statuses.FAILED
        try:
            updated = executions.update_status(self.access, execution, status,
                                               publish_work=status in executions.WORK_STATUSES,
                                               held=True, result=value, result_size=size)
        except StaleRecordError:
            return False
        LOG.info("execution %s %s", execution.pk, status)
        if self.completed is not None and updated.status in statuses.COMPLETED:
            self.completed(updated)
        return True

    # -- canceling ------------------------------------------------------------------------

    def cancel(self, execution_id: str, shared: bool) -> None:
        """Stop this process's run of a canceling execution, or end one that nobody runs."""
        execution = load(self.access, execution_id)
        if execution is None or execution.status != statuses.CANCELING:
            return
        if (execution.runner or {}).get("name") in registry.WORKFLOW_RUNNERS:
            return  # the workflow engine cancels it once its children have stopped
        run = self.running.get(str(execution.pk))
        if run is not None:
            self._stop(run)
            return
        info = execution.runner_info or {}
        mine = info.get("worker_id") == self.worker_id
        if mine or (shared and not (info.get("worker_id") and self._owner_alive(info))):
            try:
                executions.update_status(self.access, execution, statuses.CANCELED, publish_work=False,
                                         result=execution.result or {"message": executions.CANCELED_MESSAGE})
                LOG.info("execution %s canceled (no run in progress)", execution.pk)
            except (StaleRecordError, TransitionError) as exc:
                LOG.debug("execution %s moved on while canceling: %s", execution.pk, exc)

    def _stop(self, run: Run) -> None:
        if run.cancel_requested:
            return
        run.cancel_requested = True
        if run.runner is None or not run.in_runner:
            return  # _execute sees the flag before it starts the runner
        if type(run.runner).cancel is ActionRunner.cancel:
            self._kill(run)
            return
        try:
            run.runner.cancel()
        except Exception:  # fall back on killing the green thread
            LOG.exception("execution %s: runner cancel failed", run.execution_id)
            self._kill(run)
            return
        eventlet.spawn_after(CANCEL_GRACE, self._kill, run)

    def _kill(self, run: Run) -> None:
        if run.in_runner and run.thread is not None and self.running.get(run.execution_id) is run:
            LOG.info("execution %s: killing its run", run.execution_id)
            run.thread.kill()

    def _same_host_owner_alive(self, info: dict) -> bool:
        if info.get("hostname") == self.runner_info["hostname"] and info.get("pid"):
            return pid_alive(int(info["pid"]))
        return True

    # -- stopping -------------------------------------------------------------------------

    def shutdown(self, others_alive: Callable[[], bool] | None = None, wait: float = 5.0) -> list[str]:
        """Graceful stop: let runs end while other runners live, abandon the rest; their ids."""
        conf = self.settings.actionrunner
        if conf.graceful_shutdown and others_alive is not None:
            deadline = time.monotonic() + conf.exit_still_active_check
            while self.running and time.monotonic() < deadline and others_alive():
                eventlet.sleep(conf.still_active_check_interval)
        abandoned = []
        for run in list(self.running.values()):
            execution = load(self.access, run.execution_id)
            if execution is not None and execution.status in statuses.ACTIVE:
                try:
                    executions.update_status(
                        self.access, execution, statuses.ABANDONED, publish_work=False,
                        result=execution.result or {"error": ABANDONED_ERROR.format(status=execution.status)})
                    abandoned.append(run.execution_id)
                    LOG.warning("execution %s abandoned: the action runner is stopping", run.execution_id)
                except (StaleRecordError, TransitionError):
                    pass
            self._stop(run)
        with eventlet.Timeout(wait, False):
            self.pool.waitall()
        return abandoned


def _revoke(execution_id: str, token: str, stored: GreenThread) -> None:
    try:
        stored.wait()  # a run that failed early may not have waited: the delete must come after
        tokens.revoke(token)
    except Exception as exc:  # whatever the database raised: the token expires on its own
        LOG.warning("execution %s: its token was not revoked: %s", execution_id, exc)


class OutputWriter:
    """The output callback of one run: chunks are queued and stored in order, in bulk, by one green
    thread, so a chatty action never waits on the database."""

    def __init__(self, publisher: Publisher, execution: ExecutionDB) -> None:
        self.publisher = publisher
        self.execution = execution
        self._pending: list[tuple[str, str, Any]] = []
        self._flusher: GreenThread | None = None

    def __call__(self, stream: str, data: str) -> None:
        self._pending.append((stream, data, utcnow()))
        if self._flusher is None:
            self._flusher = eventlet.spawn(self._flush)

    def _flush(self) -> None:
        try:
            while self._pending:
                # Whatever arrived while the previous batch was written goes in the next one.
                batch, self._pending = self._pending, []
                try:
                    executions.store_outputs(self.publisher, self.execution, batch)
                except StackStormBaseException as exc:
                    # Losing part of the live stream must not fail the run; the result keeps all of it.
                    LOG.warning("execution %s: %d output chunks not stored: %s", self.execution.pk,
                                len(batch), exc)
        finally:
            self._flusher = None

    def close(self) -> None:
        """Wait until every chunk given so far is stored."""
        while self._flusher is not None or self._pending:
            if self._flusher is None:
                self._flusher = eventlet.spawn(self._flush)
            self._flusher.wait()


class _WorkHandler(Handler):
    """actionrunner.work: run the scheduled execution here."""

    def __init__(self, dispatcher: Dispatcher, queue) -> None:
        self.dispatcher = dispatcher
        self.queue = queue

    def handle(self, body: dict[str, Any]) -> None:
        execution = self.dispatcher.loader.get(body.get("id"))
        if execution is None or execution.status != statuses.SCHEDULED:
            return
        self.dispatcher.start(execution)

    def give_up(self, body: dict[str, Any], error: BaseException) -> None:
        execution = load(self.dispatcher.access, body.get("id"))
        if execution is None or execution.status != statuses.SCHEDULED:
            return
        try:
            executions.update_status(self.dispatcher.access, execution, statuses.FAILED, publish_work=False,
                                     result={"error": f"cannot be dispatched: {error}"})
        except (StaleRecordError, TransitionError):
            pass


class _CancelHandler(Handler):
    """actionrunner.cancel (shared) or this process's own canceling queue."""

    def __init__(self, dispatcher: Dispatcher, queue, shared: bool) -> None:
        self.dispatcher = dispatcher
        self.queue = queue
        self.shared = shared

    def handle(self, body: dict[str, Any]) -> None:
        self.dispatcher.cancel(body.get("id"), self.shared)
