"""Every exchange and queue of the bus, declared in one place.

Names follow StackStorm's (``st2.execution``, ``st2.liveaction.status`` ...),
with the ``st2`` part taken from ``[messaging] prefix`` so that tests (and two
platforms on one broker) never share queues. All exchanges are topic exchanges.

| exchange                         | routing key            | carries                                   |
| -------------------------------- | ---------------------- | ----------------------------------------- |
| <p>.<resource>                   | create/update/delete   | {"id"} of a record written (persistence)  |
| <p>.execution                    | update.workflow        | a status change a workflow engine acts on |
|                                  |                        | (below)                                   |
| <p>.execution                    | update.progress        | a plain execution's other status changes  |
| <p>.liveaction.status            | the new status         | {"id"} of an execution that needs work    |
| <p>.execution.output             | stdout/stderr          | {"id", "execution_id"} of an output chunk |
| <p>.trigger_instances_dispatch   | trigger type ref       | {"id"} of a stored trigger instance       |
| <p>.sensor                       | create/update/delete   | {"id"} of a sensor type                   |
| <p>.announcement                 | the route              | the announcement message itself           |
| <p>.workflow.status              | the new status         | {"id"} of a workflow execution            |

A status change of a workflow's own execution, or of a workflow's child
once it has started (it completes, waits, runs again), goes out as
``update.workflow``; the other completions as ``update``; the rest (a plain
execution or child waiting to start, starting, waiting) as ``update.progress``
(st2common.services.executions.update_routing). The notifier binds the first
two, the workflow engine only the first, and nobody the third, so no service
receives, reads and drops updates it has nothing to do with. A record written
without a status (``update``, e.g. through the API) goes to the notifier, which
reads it.

Work queues are durable and shared by every copy of the consuming service
(competing consumers); they are declared up front (Publisher.declare_work_queues)
so a message published before its consumer starts waits for it. Broadcast
queues are per process: every copy sees every message (used to refresh
in-memory caches and the event stream). They are exclusive and auto-delete on
RabbitMQ; on the filesystem bus their binding outlives a killed process until
the next consumer to start sweeps it (st2common.transport.filesystem).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from kombu import Exchange, Queue, binding

from st2common.exceptions import BusError

# Exchange suffix -> what it carries (documentation only; every exchange is a topic one).
EXCHANGES: dict[str, str] = {
    "execution": "execution records created, updated, deleted",
    "liveaction.status": "execution work, routed by the status that needs handling",
    "execution.output": "output chunks of running executions",
    "action": "action records",
    "actionalias": "action alias records",
    "pack": "pack records",
    "runnertype": "runner type records",
    "rule": "rule records",
    "trigger": "trigger records (watched by sensors, timers and webhooks)",
    "triggertype": "trigger type records",
    "trigger_instances_dispatch": "trigger instances to match against rules",
    "sensor": "sensor type records",
    "announcement": "announcements published by the announcement runner",
    "workflow": "workflow execution records",
    "workflow.status": "workflow work, routed by status",
    "keyvalue": "datastore items",
    "policy": "policy records",
}

# Which exchange a stored resource's create/update/delete events go to.
RESOURCE_EXCHANGES: dict[str, str] = {
    "execution": "execution",
    "action": "action",
    "action_alias": "actionalias",
    "pack": "pack",
    "runner_type": "runnertype",
    "rule": "rule",
    "trigger": "trigger",
    "trigger_type": "triggertype",
    "sensor_type": "sensor",
    "workflow_execution": "workflow",
    "key_value_pair": "keyvalue",
    "policy": "policy",
}

# Status changes of workflows and their children (st2common.services.executions.update_routing).
WORKFLOW_UPDATE = "update.workflow"
# Status changes of plain executions that no service acts on (not completed): bound by nobody.
UPDATE_PROGRESS = "update.progress"

# Work queue suffix -> (exchange suffix, binding key or keys). Consumers compete.
WORK_QUEUES: dict[str, tuple[str, str | tuple[str, ...]]] = {
    "actionrunner.req": ("liveaction.status", "requested"),
    "actionrunner.work": ("liveaction.status", "scheduled"),
    "actionrunner.cancel": ("liveaction.status", "canceling"),
    "actionrunner.pause": ("liveaction.status", "pausing"),
    "actionrunner.resume": ("liveaction.status", "resuming"),
    "notifiers.execution.work": ("execution", ("update", WORKFLOW_UPDATE)),
    "trigger_instances_dispatch.rules_engine": ("trigger_instances_dispatch", "#"),
    "workflow.work": ("workflow.status", "requested"),
    "workflow.action.update": ("execution", WORKFLOW_UPDATE),
}


@dataclass(frozen=True)
class Topology:
    """The bus layout under one prefix; builds kombu Exchange and Queue objects."""

    prefix: str = "st2"
    _cache: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def exchange(self, name: str) -> Exchange:
        """The topic exchange <prefix>.<name>."""
        if name not in EXCHANGES:
            raise BusError(f"unknown exchange {name!r}; known: {', '.join(sorted(EXCHANGES))}")
        key = ("x", name)
        if key not in self._cache:
            self._cache[key] = Exchange(f"{self.prefix}.{name}", type="topic", durable=True)
        return self._cache[key]

    def resource_exchange(self, resource_type: str) -> Exchange | None:
        """The exchange that carries writes of resource_type, or None if nobody listens for them."""
        name = RESOURCE_EXCHANGES.get(resource_type)
        return self.exchange(name) if name else None

    def work_queue(self, name: str) -> Queue:
        """The durable work queue <prefix>.<name>, shared by every copy of its consumer."""
        if name not in WORK_QUEUES:
            raise BusError(f"unknown work queue {name!r}; known: {', '.join(sorted(WORK_QUEUES))}")
        key = ("q", name)
        if key not in self._cache:
            exchange, keys = WORK_QUEUES[name]
            if isinstance(keys, str):
                queue = Queue(f"{self.prefix}.{name}", self.exchange(exchange), routing_key=keys, durable=True)
            else:
                queue = Queue(f"{self.prefix}.{name}", durable=True,
                              bindings=[binding(self.exchange(exchange), routing_key=each) for each in keys])
            self._cache[key] = queue
        return self._cache[key]

    def broadcast_queue(self, exchange: str, routing_key: str = "#", owner: str | None = None) -> Queue:
        """A queue of this process alone, bound to exchange: every process gets every message."""
        owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return Queue(
            f"{self.prefix}.{exchange}.broadcast.{owner}",
            self.exchange(exchange),
            routing_key=routing_key,
            durable=False,
            auto_delete=True,
            exclusive=True,
        )

    def all_work_queues(self) -> list[Queue]:
        """Every work queue, for declaring them up front."""
        return [self.work_queue(name) for name in WORK_QUEUES]

    def all_exchanges(self) -> list[Exchange]:
        """Every exchange of the prefix."""
        return [self.exchange(name) for name in EXCHANGES]

    def delete(self, channel) -> None:
        """Delete every work queue and exchange of the prefix from the broker (tests, resets)."""
        for queue in self.all_work_queues():
            queue(channel).delete()
        for exchange in self.all_exchanges():
            exchange(channel).delete()
