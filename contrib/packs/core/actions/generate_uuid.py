"""core.uuid: return a new UUID as text."""

import uuid

from st2common.runners.base_action import Action

GENERATORS = {"uuid1": uuid.uuid1, "uuid4": uuid.uuid4}


class GenerateUUID(Action):
    """Generate a uuid1 or uuid4."""

    def run(self, uuid_type="uuid4"):
        if uuid_type not in GENERATORS:
            raise ValueError("Unknown uuid_type. Only uuid1 and uuid4 are supported")
        return str(GENERATORS[uuid_type]())
