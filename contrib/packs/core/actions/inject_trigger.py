"""core.inject_trigger: dispatch a trigger instance through the API's /webhooks/st2 endpoint."""

import os

from st2client.client import Client

from st2common.runners.base_action import Action

__all__ = ["InjectTriggerAction"]


class InjectTriggerAction(Action):
    """Post a trigger and its payload to the API that runs this action, with an optional trace tag."""

    def run(self, trigger=None, trigger_name=None, payload=None, trace_tag=None):
        # trigger_name supersedes trigger; the older name stays for existing workflows.
        trigger = trigger_name or trigger
        if not trigger:
            raise ValueError('Either "trigger_name" or "trigger" must be provided')
        body = {"trigger": trigger, "payload": payload or {}}
        if trace_tag:
            body["trace_tag"] = trace_tag
        # The action runner tells every action where its API is (and, with auth on, a token).
        client = Client(api_url=os.environ.get("ST2_ACTION_API_URL"),
                        token=os.environ.get("ST2_ACTION_AUTH_TOKEN"))
        self.logger.debug('Injecting trigger "%s" with payload keys %s', trigger, sorted(body["payload"]))
        return client.request("POST", "/webhooks/st2", json=body).json()
