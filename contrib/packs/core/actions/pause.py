"""core.pause: sleep for max_pause seconds, or a random time up to it."""

import random as _random
import time

from st2common.runners.base_action import Action


class PauseAction(Action):
    """Pause the current thread of a workflow."""

    def run(self, max_pause, random=False):
        pause = _random.randint(0, max_pause) if random else max_pause
        self.logger.debug("pausing for %s seconds", pause)
        time.sleep(pause)
