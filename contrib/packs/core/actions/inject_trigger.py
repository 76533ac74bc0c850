"""core.inject_trigger: dispatch a trigger instance through the API's /webhooks/st2 endpoint."""

from st2common.runners.base_action import Action

__all__ = ["InjectTriggerAction"]


class InjectTriggerAction(Action):
    """Post a trigger and its payload as the execution's user, with an optional trace tag."""

    def run(self, trigger=None, trigger_name=None, payload=None, trace_tag=None):
        # trigger_name supersedes trigger; the older name stays for existing workflows.
        trigger = trigger_name or trigger
        if not trigger:
            raise ValueError('Either "trigger_name" or "trigger" must be provided')
        payload = payload or {}

        client = self.action_service.datastore_service.get_api_client()
        self.logger.debug('Injecting trigger "%s" with payload keys %s', trigger, sorted(payload))
        return client.webhooks.post_generic_webhook(trigger=trigger, payload=payload, trace_tag=trace_tag)
