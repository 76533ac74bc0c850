"""Pack content: discovery and loading of packs, validation, and one registrar per content kind.

``register(settings, kinds=None, publisher=None)`` is the entry point
``st2ctl reload`` calls; see bootstrap.py.
"""

from st2common.content.bootstrap import ALL_KINDS, DEFAULT_KINDS, RegistrationReport, register

__all__ = ["ALL_KINDS", "DEFAULT_KINDS", "RegistrationReport", "register"]
