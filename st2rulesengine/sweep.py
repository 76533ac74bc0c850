"""The rules engine's sweep: trigger instances a lost message or a dead engine left behind.

| records found                                  | what the sweep does                                  |
| ---------------------------------------------- | ---------------------------------------------------- |
| ``pending`` for stuck_after, the engines'      | publish {"id"} again on trigger_instances_dispatch   |
| queue empty                                    | (a duplicate is harmless: the claim is a             |
|                                                | compare-and-set)                                     |
| ``processing`` in every round for stuck_after, | take it over (processing -> processing_failed, one   |
| not held by this process                       | sweeper wins) and finish it (RulesEngine.recover):   |
|                                                | the rules enforced before are not enforced again;    |
|                                                | if that fails too it stays processing_failed         |

An engine holds an instance in ``processing`` for milliseconds, so one seen
there round after round for stuck_after seconds belongs to an engine that
died (or hangs). The instance record has no claim time, so the clock starts
when this sweep first sees it, and restarts with the process.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Callable

from st2common import statuses
from st2common.exceptions import StackStormBaseException
from st2common.models.db.base import utcnow
from st2common.services import triggerinstances, triggers
from st2rulesengine.worker import RulesEngine

LOG = logging.getLogger(__name__)


class Sweep:
    """One engine's sweep of pending and processing trigger instances."""

    def __init__(self, engine: RulesEngine, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.clock = clock
        # Instance id -> when this sweep first saw it processing.
        self._processing_since: dict[str, float] = {}

    def backlog(self) -> int | None:
        """How many messages wait on the engines' queue (None when the bus cannot say)."""
        try:
            with self.engine.publisher.connection.clone() as connection:
                return self.engine.queue(connection.default_channel).queue_declare(passive=True).message_count
        except Exception as exc:  # kombu and the transports raise many unrelated types
            LOG.debug("rules engine: queue depth unknown: %s", exc)
            return None

    def republish_pending(self, stuck_after: float = 0.0) -> list[str]:
        """Nudge again every instance pending for at least stuck_after seconds (a lost message); their ids.

        While messages wait on the queue, pending instances are most likely
        behind them, not lost: re-publishing would only duplicate the backlog,
        so the sweep waits until the queue is empty.
        """
        if self.backlog():
            return []
        cutoff = utcnow() - datetime.timedelta(seconds=stuck_after)
        stuck = self.engine.instances.query({"status": statuses.TRIGGER_INSTANCE_PENDING},
                                            raw={"occurrence_time": {"$lte": cutoff}}, order_by=["occurrence_time"],
                                            only=("id", "trigger"))
        for instance in stuck:
            trigger = triggers.lookup_trigger(instance.trigger)
            routing_key = trigger.type if trigger is not None else instance.trigger
            self.engine.publisher.publish(triggerinstances.DISPATCH_EXCHANGE, routing_key, {"id": str(instance.pk)})
        if stuck:
            LOG.info("rules engine sweep: %d pending trigger instances re-published", len(stuck))
        return [str(instance.pk) for instance in stuck]

    def recover_processing(self, stuck_after: float) -> list[str]:
        """Finish the instances seen processing for at least stuck_after seconds; the ids of those now processed."""
        cutoff = utcnow() - datetime.timedelta(seconds=stuck_after)
        # An instance cannot have been processing for longer than it has existed.
        found = self.engine.instances.query({"status": statuses.TRIGGER_INSTANCE_PROCESSING},
                                            raw={"occurrence_time": {"$lte": cutoff}}, order_by=["occurrence_time"])
        now = self.clock()
        since = {str(instance.pk): self._processing_since.get(str(instance.pk), now) for instance in found}
        self._processing_since = since
        recovered = []
        for instance in found:
            instance_id = str(instance.pk)
            if instance_id in self.engine.in_hand or now - since[instance_id] < stuck_after:
                continue
            taken = triggerinstances.update_instance_status(instance, statuses.TRIGGER_INSTANCE_PROCESSING_FAILED)
            if taken is None:
                continue  # finished meanwhile, or another sweeper took it
            self._processing_since.pop(instance_id, None)
            try:
                if self.engine.recover(taken):
                    recovered.append(instance_id)
            except StackStormBaseException as exc:
                LOG.error("rules engine sweep: trigger instance %s left processing_failed: %s", instance_id, exc)
        if recovered:
            LOG.info("rules engine sweep: %d trigger instances left processing were finished", len(recovered))
        return recovered
