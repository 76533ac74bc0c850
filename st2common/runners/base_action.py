"""The class pack Python actions derive from, at StackStorm's import path.

Pack code writes ``from st2common.runners.base_action import Action`` and
implements ``run(**parameters)``, returning a value or a ``(bool, value)``
tuple. The python-script runner's wrapper (st2actionrunner/runners/python_wrapper.py)
builds the instance with the pack's config and calls run().

``self.action_service`` (StackStorm's datastore access: get_value, set_value,
list_values, delete_value) is None until the platform has a datastore to give;
the wrapper passes what it has and actions that need it fail with an
AttributeError on None, as they would in StackStorm without a datastore.
"""

from __future__ import annotations

import abc
import logging
import sys
from typing import Any

from st2common.exceptions import ValidationError

__all__ = ["Action", "PackConfigDict", "MissingConfigItemError", "action_logger"]

LOG_FORMAT = "%(name)-12s: %(levelname)-8s %(message)s"
# StackStorm's AUDIT level sits above CRITICAL; pack actions may ask for it by name.
AUDIT = logging.CRITICAL + 10
logging.addLevelName(AUDIT, "AUDIT")


class MissingConfigItemError(ValidationError, KeyError):
    """A pack action read a config item the pack config does not define."""


class PackConfigDict(dict):
    """The pack config as a dict whose missing keys raise an error naming the config file."""

    def __init__(self, pack: str, values: dict | None = None, config_path: str | None = None) -> None:
        super().__init__(values or {})
        self.pack = pack
        self.config_path = config_path or f"configs/{pack}.yaml"

    def __getitem__(self, key: str) -> Any:
        try:
            return super().__getitem__(key)
        except KeyError:
            raise MissingConfigItemError(
                f'Config for pack "{self.pack}" is missing key "{key}". Make sure that the config '
                f'file exists at {self.config_path} and that it contains this key.',
                field=key,
            ) from None


def action_logger(class_name: str, level: str | int = "DEBUG") -> logging.Logger:
    """The logger of an action class: actions.python.<ClassName>, to stderr, at level."""
    logger = logging.getLogger(f"actions.python.{class_name}")
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            level = logging.DEBUG
    handler = next((h for h in logger.handlers if getattr(h, "_st2_action", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._st2_action = True
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
        # Action output must not also go to whatever the host process configured.
        logger.propagate = False
    handler.setLevel(level)
    logger.setLevel(level)
    return logger


class Action(abc.ABC):
    """Base class of pack Python actions: self.config, self.logger, self.action_service; implement run()."""

    description: str | None = None

    def __init__(self, config: dict | None = None, action_service: Any = None) -> None:
        if isinstance(config, PackConfigDict):
            self.config = config
        else:
            self.config = PackConfigDict(getattr(action_service, "pack", None) or "unknown", config)
        self.action_service = action_service
        self.logger = action_logger(type(self).__name__)

    @abc.abstractmethod
    def run(self, **kwargs: Any) -> Any:
        """Do the work; return a value, or (succeeded: bool, value)."""
