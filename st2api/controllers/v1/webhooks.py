"""/webhooks: list the hooks, show one, and POST to a hook to dispatch trigger instances.

``POST /webhooks/st2`` takes ``{trigger, payload[, trace_tag]}`` and
dispatches any registered trigger. ``POST /webhooks/<url>`` (the url may hold
"/") dispatches ``{headers, headers_lower, body}`` to every core.st2.webhook
trigger a rule declared with that url; an unknown hook is a 404. The triggers
of a hook are found by type and the hash of their parameters (an indexed
query, so a rule created a moment ago is served at once by every API copy).

Bodies are read as StackStorm's router reads them: JSON by default, forms
(urlencoded or multipart) as a dict of lists, text/plain as a string. The
answer is 202 with the body as it was read. A payload that does not fit the
trigger type's payload schema is a 400 naming the field. The auth headers and
cookies never reach the payload; ``St2-Trace-Tag`` sets the trace tag
(default ``webhook-<hook>-<uuid hex>``).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import parse_qs

import webob

from st2api.controllers.base import Call, ResourceController, Route, reply, request_body
from st2common.exceptions import NotFoundError, ValidationError
from st2common.models.api import trigger as trigger_api
from st2common.models.api.base import json_type
from st2common.models.db.trigger import TriggerDB
from st2common.services import triggerinstances, triggertypes
from st2common.services import triggers as trigger_service

LOG = logging.getLogger(__name__)

SYSTEM_HOOK = "st2"
TRACE_TAG_HEADER = "St2-Trace-Tag"
# Never copied into a payload (StackStorm's list).
AUTH_HEADERS = frozenset({"st2-api-key", "x-auth-token", "cookie"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class WebhooksController(ResourceController):
    """Webhook triggers, addressed by their url (which may hold "/")."""

    resource = "webhooks"
    model = TriggerDB
    default_sort = ("name",)
    default_limit = None

    routes = (
        Route("GET", "", "get_all"),
        Route("GET", "{hook}", "get_one"),
        Route("POST", "{hook}", "post", status=202),
    )

    def find(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]] | None:
        """Every path below /webhooks/ is one hook url."""
        if not segments:
            return super().find(method, segments)
        return super().find(method, ["/".join(segments)])

    def to_api(self, doc: TriggerDB, call: Call) -> dict:
        return trigger_api.trigger_to_api(doc)

    # -- reads --------------------------------------------------------------------------

    def get_all(self, call: Call) -> webob.Response:
        """GET /webhooks: every core.st2.webhook trigger (the CLI reads parameters.url)."""
        return self.list_response(call, raw={"type": triggertypes.WEBHOOK_TRIGGER_REF})

    def get_one(self, call: Call) -> dict:
        """GET /webhooks/{url}: the first trigger registered for the url."""
        hook = call.path["hook"].strip("/")
        triggers = self._triggers_for(hook)
        if not triggers:
            raise NotFoundError("webhook", hook, f"Webhook {hook} not registered with st2")
        return self.to_api(triggers[0], call)

    # -- dispatch -----------------------------------------------------------------------

    def post(self, call: Call) -> webob.Response:
        """POST /webhooks/{url}: dispatch to the hook's triggers (or any trigger for "st2"); 202."""
        hook = call.path["hook"].strip("/")
        body = read_body(call.request)
        headers = {name: value for name, value in call.request.headers.items()
                   if name.lower() not in AUTH_HEADERS}
        header_tag = next((headers.pop(name) for name in list(headers) if name.lower() == TRACE_TAG_HEADER.lower()),
                          None)
        validate = call.settings.system.validate_trigger_payload
        if hook == SYSTEM_HOOK:
            self._post_system(body, header_tag, validate)
        else:
            triggers = self._triggers_for(hook)
            if not triggers:
                LOG.debug("webhook %s: not registered", hook)
                raise NotFoundError("webhook", hook, f"Webhook {hook} not registered with st2")
            payload = {"headers": headers, "headers_lower": {k.lower(): v for k, v in headers.items()},
                       "body": body}
            tag = header_tag or default_trace_tag(hook)
            # A tag made up here names no trace yet: the first instance starts it, the others join it.
            context = {"trace_tag": tag} if header_tag else None
            for trigger in triggers:
                instance = triggerinstances.dispatch(self.state.publisher, trigger.ref, payload,
                                                     trace_context=context, validate=validate, new_trace_tag=tag)
                context = {"trace_tag": tag}
                LOG.info("webhook %s: trigger instance %s of %s", hook, instance.pk, trigger.ref)
        return reply(body, status=202)

    def _post_system(self, body: Any, header_tag: str | None, validate: bool) -> None:
        if not isinstance(body, dict):
            raise ValidationError(f"Webhook body needs to be an object, got: {json_type(body)}")
        trigger = body.get("trigger")
        if not trigger:
            raise ValidationError("Trigger not specified.", field="trigger")
        tag = body.get("trace_tag") or header_tag
        try:
            instance = triggerinstances.dispatch(self.state.publisher, trigger, body.get("payload") or {},
                                                 trace_context={"trace_tag": tag} if tag else None,
                                                 validate=validate, new_trace_tag=default_trace_tag(SYSTEM_HOOK))
        except NotFoundError as exc:
            # The hook exists; what the body names does not.
            raise ValidationError(str(exc), field="trigger") from None
        LOG.info("webhook st2: trigger instance %s of %s", instance.pk, instance.trigger)

    def _triggers_for(self, hook: str) -> list[TriggerDB]:
        """The webhook triggers of a url (stored with the url stripped of "/", as the hook is).

        From memory (triggers.LOOKUPS): every POST asked the database before, 2.5 ms of a 19 ms webhook.
        """
        return trigger_service.lookup_triggers_for(triggertypes.WEBHOOK_TRIGGER_REF, {"url": hook})


def default_trace_tag(hook: str) -> str:
    """StackStorm's trace tag for a webhook call without one."""
    return f"webhook-{hook}-{uuid.uuid4().hex}"


def read_body(request: webob.Request) -> Any:
    """The body as StackStorm's router reads it for its Content-Type; ValidationError when it cannot."""
    content_type = (request.content_type or "application/json").lower()
    raw = request_body(request)
    if content_type in FORM_TYPES:
        if content_type == "multipart/form-data":
            return {name: [_form_value(v) for v in request.POST.getall(name)]
                    for name in dict.fromkeys(request.POST.keys())}
        return parse_qs(raw.decode("utf-8", "replace"))
    if content_type == "text/plain":
        return raw.decode("utf-8", "replace")
    if content_type == "application/json" or content_type.endswith("+json"):
        if not raw or not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ValidationError(f"Failed to parse request body: {exc}") from None
    raise ValidationError(f'Unsupported Content-Type: "{content_type}"')


def _form_value(value: Any) -> str:
    """A multipart field as text (an uploaded file: its content)."""
    if isinstance(value, str):
        return value
    return value.value.decode("utf-8", "replace") if isinstance(value.value, bytes) else str(value.value)
