"""The ``sensor_service`` a pack sensor gets: dispatch trigger instances, use the datastore, log.

Same methods and signatures as StackStorm's SensorService. Differences that
a sensor could notice: none on purpose. Dispatch stores the trigger instance
and publishes it to the rules engines directly (StackStorm goes through its
own bus too); a payload that does not match the trigger type's
payload_schema (when ``[system] validate_trigger_payload``) or a trigger
that is not registered is logged and dropped, as StackStorm drops it, so a
bad event never kills the sensor. Datastore access is direct as well
(StackStorm goes through the API with a service token), system scope only,
with ``local=True`` names prefixed ``<pack>.<ClassName>:``.
"""

from __future__ import annotations

import logging
from typing import Any

from st2client.models import KeyValuePair
from st2common.exceptions import BusError, DatabaseError, NotFoundError, StackStormBaseException, ValidationError
from st2common.models.db.keyvalue import FULL_SYSTEM_SCOPE, SYSTEM_SCOPE
from st2common.services import triggerinstances
from st2common.services.keyvalues import Datastore
from st2common.transport.publisher import Publisher

LOG = logging.getLogger(__name__)

# Between the sensor's ref and the key name of a local datastore item: "<pack>.<ClassName>:<name>".
DATASTORE_NAME_SEPARATOR = ":"


class SensorService:
    """What a sensor instance reaches the platform through (``self.sensor_service``)."""

    def __init__(self, settings, publisher: Publisher, pack: str, class_name: str) -> None:
        self.settings = settings
        self.publisher = publisher
        self.pack = pack
        self.class_name = class_name
        self._logger = logging.getLogger(f"st2reactor.sensor.{pack}.{class_name}")
        self._datastore = Datastore(settings, publisher)

    @property
    def ref(self) -> str:
        """The sensor's ref, ``<pack>.<ClassName>``."""
        return f"{self.pack}.{self.class_name}"

    # -- logging --------------------------------------------------------------------------------

    def get_logger(self, name: str) -> logging.Logger:
        """A logger for the sensor's own messages, named under the sensor."""
        return logging.getLogger(f"{self._logger.name}.{name}")

    # -- dispatch -------------------------------------------------------------------------------

    def dispatch(self, trigger: str | dict, payload: dict | None = None, trace_tag: str | None = None) -> None:
        """Store and publish a trigger instance; trace_tag names the trace it starts or joins."""
        self.dispatch_with_context(trigger, payload, {"trace_tag": trace_tag} if trace_tag else None)

    def dispatch_with_context(self, trigger: str | dict, payload: dict | None = None,
                              trace_context: dict | None = None) -> None:
        """dispatch() with a whole trace context ({"trace_tag"} or {"id_"})."""
        validate = self.settings.system.validate_trigger_payload
        try:
            instance = triggerinstances.dispatch(self.publisher, trigger, payload, trace_context=trace_context,
                                                 validate=validate)
        except ValidationError as exc:
            self._logger.warning('Trigger payload validation failed and validation is enabled, not dispatching '
                                 'a trigger "%s": %s', _name(trigger), exc)
            return
        except NotFoundError as exc:
            self._logger.warning('Not dispatching trigger "%s": %s', _name(trigger), exc)
            return
        except (DatabaseError, BusError) as exc:
            self._logger.error('Failed to dispatch trigger "%s": %s', _name(trigger), exc)
            return
        LOG.debug("sensor %s dispatched trigger instance %s of %s", self.ref, instance.pk, instance.trigger)

    # -- datastore ------------------------------------------------------------------------------

    @property
    def datastore_service(self) -> "SensorService":
        """StackStorm's datastore_service: the get/set/list/delete_value methods below."""
        return self

    def list_values(self, local: bool = True, prefix: str | None = None, limit: int | None = None,
                    offset: int = 0) -> list[KeyValuePair]:
        """System-scope items whose name starts with the prefix (under the sensor's own prefix when local)."""
        key_prefix = self._full_name(prefix or "", local) if local else prefix
        limit = limit or self.settings.api.max_page_size
        items = self._datastore.list(prefix=key_prefix, scope=FULL_SYSTEM_SCOPE, limit=limit, offset=offset)
        return [KeyValuePair(**item) for item in items]

    def get_value(self, name: str, local: bool = True, scope: str = SYSTEM_SCOPE,
                  decrypt: bool = False) -> str | None:
        """An item's value (decrypted when asked), or None when it does not exist or cannot be read."""
        name = self._full_name(name, local, scope)
        try:
            return self._datastore.get(name, scope=FULL_SYSTEM_SCOPE, decrypt=decrypt)["value"]
        except NotFoundError:
            return None
        except StackStormBaseException as exc:
            self._logger.exception("Exception retrieving value from datastore (name=%s): %s", name, exc)
            return None

    def set_value(self, name: str, value: Any, ttl: int | None = None, local: bool = True,
                  scope: str = SYSTEM_SCOPE, encrypt: bool = False) -> bool:
        """Create or replace an item (value as str; encrypted when asked; expiring after ttl seconds)."""
        name = self._full_name(name, local, scope)
        self._datastore.set(name, str(value), scope=FULL_SYSTEM_SCOPE, secret=encrypt, ttl=ttl or None)
        return True

    def delete_value(self, name: str, local: bool = True, scope: str = SYSTEM_SCOPE) -> bool:
        """Delete an item; False when it did not exist or could not be deleted."""
        name = self._full_name(name, local, scope)
        try:
            self._datastore.delete(name, scope=FULL_SYSTEM_SCOPE)
        except StackStormBaseException as exc:
            self._logger.exception("Exception deleting value from datastore (name=%s): %s", name, exc)
            return False
        return True

    def _full_name(self, name: str, local: bool, scope: str = SYSTEM_SCOPE) -> str:
        if scope not in (SYSTEM_SCOPE, FULL_SYSTEM_SCOPE):
            raise ValidationError(f"Scope {scope} is unsupported.", field="scope")
        return f"{self.ref}{DATASTORE_NAME_SEPARATOR}{name}" if local else name


def _name(trigger: str | dict) -> str:
    if isinstance(trigger, dict):
        return str(trigger.get("ref") or trigger.get("type") or trigger.get("id"))
    return str(trigger)
