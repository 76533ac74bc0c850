"""The bus layout: every exchange and queue in one table, names as StackStorm spells them."""

from __future__ import annotations

import os
import re

import pytest
from kombu.transport.virtual.exchange import TopicExchange

from st2common import statuses
from st2common.exceptions import BusError
from st2common.services.executions import update_routing
from st2common.transport.topology import EXCHANGES, RESOURCE_EXCHANGES, WORK_QUEUES, Topology

ACTIONRUNNER_ROUTES = {
    statuses.REQUESTED: "st2.actionrunner.req",
    statuses.SCHEDULED: "st2.actionrunner.work",
    statuses.CANCELING: "st2.actionrunner.cancel",
    statuses.PAUSING: "st2.actionrunner.pause",
    statuses.RESUMING: "st2.actionrunner.resume",
}


def routed(topology: Topology, exchange: str, routing_key: str) -> set[str]:
    """Names of the work queues a message with routing_key on exchange reaches (topic semantics)."""
    topic = TopicExchange(channel=None)
    hits = set()
    for queue in topology.all_work_queues():
        bindings = [(b.exchange, b.routing_key) for b in queue.bindings] or [(queue.exchange, queue.routing_key)]
        for bound, key in bindings:
            if bound.name == topology.exchange(exchange).name and re.match(topic.key_to_pattern(key), routing_key):
                hits.add(queue.name)
    return hits


def test_stackstorm_names_under_the_default_prefix():
    # Given the default prefix
    topology = Topology()
    # Then exchanges and queues carry StackStorm's names
    assert topology.exchange("liveaction.status").name == "st2.liveaction.status"
    assert topology.exchange("trigger_instances_dispatch").name == "st2.trigger_instances_dispatch"
    assert topology.work_queue("trigger_instances_dispatch.rules_engine").name == \
        "st2.trigger_instances_dispatch.rules_engine"
    assert topology.work_queue("notifiers.execution.work").name == "st2.notifiers.execution.work"
    assert topology.work_queue("workflow.work").name == "st2.workflow.work"
    assert topology.work_queue("workflow.action.update").name == "st2.workflow.action.update"


@pytest.mark.parametrize("status, queue", sorted(ACTIONRUNNER_ROUTES.items()))
def test_execution_work_is_routed_by_status_to_exactly_one_queue(status, queue):
    # Given the default topology, when an execution's new status is the routing key
    hits = routed(Topology(), "liveaction.status", status)
    # Then exactly the queue that handles that status gets it
    assert hits == {queue}


@pytest.mark.parametrize("status", [statuses.RUNNING, statuses.SUCCEEDED, statuses.FAILED, statuses.DELAYED])
def test_statuses_nobody_works_on_reach_no_work_queue(status):
    assert routed(Topology(), "liveaction.status", status) == set()


def test_routing_keys_of_status_queues_are_real_statuses():
    for exchange, key in WORK_QUEUES.values():
        if exchange in ("liveaction.status", "workflow.status"):
            assert key in statuses.EXECUTION_STATUSES


def test_plain_execution_updates_reach_the_notifier_alone_workflow_ones_the_engine_too():
    assert routed(Topology(), "execution", "update.progress") == set()
    assert routed(Topology(), "execution", "update") == {"st2.notifiers.execution.work"}
    assert routed(Topology(), "execution", "update.workflow") == {"st2.notifiers.execution.work",
                                                                  "st2.workflow.action.update"}


def test_rules_engine_queue_takes_every_trigger_type():
    hits = routed(Topology(), "trigger_instances_dispatch", "core.st2.webhook")
    assert hits == {"st2.trigger_instances_dispatch.rules_engine"}


def test_every_work_queue_is_durable_and_bound_to_a_declared_topic_exchange():
    topology = Topology("px")
    for name, (exchange, keys) in WORK_QUEUES.items():
        queue = topology.work_queue(name)
        assert exchange in EXCHANGES
        assert queue.name == f"px.{name}"
        assert queue.durable and not queue.auto_delete
        bindings = [(b.exchange, b.routing_key) for b in queue.bindings] or [(queue.exchange, queue.routing_key)]
        for bound, _key in bindings:
            assert bound.name == f"px.{exchange}"
            assert bound.type == "topic" and bound.durable
        assert sorted(key for _bound, key in bindings) == sorted([keys] if isinstance(keys, str) else keys)
    assert len(topology.all_work_queues()) == len(WORK_QUEUES)
    assert {x.name for x in topology.all_exchanges()} == {f"px.{name}" for name in EXCHANGES}


def test_resource_exchanges_are_declared_exchanges():
    topology = Topology()
    for resource, exchange in RESOURCE_EXCHANGES.items():
        assert topology.resource_exchange(resource).name == f"st2.{exchange}"
    assert topology.resource_exchange("no_such_resource") is None


def test_unknown_names_raise_bus_error_listing_the_known_ones():
    topology = Topology()
    with pytest.raises(BusError, match="liveaction.status"):
        topology.exchange("liveaction")
    with pytest.raises(BusError, match="actionrunner.req"):
        topology.work_queue("actionrunner.request")


def test_two_prefixes_share_no_name():
    # Given two platforms (or two tests) on one broker
    first, second = Topology("st2a"), Topology("st2b")
    names = lambda t: {q.name for q in t.all_work_queues()} | {x.name for x in t.all_exchanges()}  # noqa: E731
    # Then nothing is shared
    assert not names(first) & names(second)


def test_broadcast_queues_belong_to_one_process_and_vanish_with_it():
    topology = Topology()
    # When two consumers in this process each ask for a broadcast queue
    first = topology.broadcast_queue("execution")
    second = topology.broadcast_queue("execution", routing_key="update")
    # Then each gets its own, named after this process for the filesystem sweep
    assert first.name != second.name
    assert first.name.startswith(f"st2.execution.broadcast.{os.getpid()}-")
    assert first.exclusive and first.auto_delete and not first.durable
    assert first.routing_key == "#" and second.routing_key == "update"
    assert first.exchange.name == "st2.execution"
    assert topology.broadcast_queue("announcement", owner="stream").name == "st2.announcement.broadcast.stream"


def test_entities_are_built_once_and_topology_is_a_value():
    topology = Topology("p")
    assert topology.exchange("execution") is topology.exchange("execution")
    assert topology.work_queue("workflow.work") is topology.work_queue("workflow.work")
    assert Topology("p") == topology and hash(Topology("p")) == hash(topology)


@pytest.mark.parametrize("parent, runner, status, old_status, key", [
    # A plain execution's updates never concern a workflow engine, and only its end the notifier.
    (None, "local-shell-cmd", statuses.SUCCEEDED, statuses.RUNNING, "update"),
    (None, "local-shell-cmd", statuses.TIMED_OUT, statuses.RUNNING, "update"),
    (None, "noop", statuses.RUNNING, statuses.SCHEDULED, "update.progress"),
    (None, "inquirer", statuses.PENDING, statuses.RUNNING, "update.progress"),
    (None, "local-shell-cmd", statuses.SCHEDULED, statuses.REQUESTED, "update.progress"),
    # A workflow's own execution: every update (its start, its controls, its end).
    (None, "orquesta", statuses.RUNNING, statuses.REQUESTED, "update.workflow"),
    ("p1", "action-chain", statuses.SCHEDULED, statuses.REQUESTED, "update.workflow"),
    (None, "orquesta", statuses.PAUSING, statuses.RUNNING, "update.workflow"),
    # A workflow's plain child: not while it waits to start or starts ...
    ("p1", "noop", statuses.SCHEDULED, statuses.REQUESTED, "update.progress"),
    ("p1", "noop", statuses.DELAYED, statuses.REQUESTED, "update.progress"),
    ("p1", "noop", statuses.RUNNING, statuses.SCHEDULED, "update.progress"),
    ("p1", "noop", statuses.RUNNING, statuses.REQUESTED, "update.progress"),
    # ... but when it completes, waits, or runs again after waiting.
    ("p1", "noop", statuses.SUCCEEDED, statuses.RUNNING, "update.workflow"),
    ("p1", "local-shell-cmd", statuses.CANCELED, statuses.CANCELING, "update.workflow"),
    ("p1", "inquirer", statuses.PENDING, statuses.RUNNING, "update.workflow"),
    ("p1", "inquirer", statuses.RUNNING, statuses.PENDING, "update.workflow"),
    ("p1", "noop", statuses.RUNNING, statuses.PAUSED, "update.workflow"),
    # A status change whose old status is not known goes to the engine, to be safe.
    ("p1", "noop", statuses.RUNNING, None, "update.workflow"),
])
def test_execution_updates_reach_the_workflow_engine_only_when_it_acts_on_them(parent, runner, status, old_status,
                                                                               key):
    assert update_routing(parent, runner, status, old_status) == key
