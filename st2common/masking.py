"""Keeping clear secrets out of what is stored: held templates, and scrubbing what a run records.

API shapes mask what a schema declares secret (models/api/base.py). This module
deals with what no schema can point at: the clear text of a secret that reaches
an ordinary value, such as a datastore item decrypted into ``cmd`` and echoed
to stdout, or a secret pack config option a Python action prints.

At request time a template that reads a secret is held back unrendered
(st2common/parameters.py decides with ``decrypts``, ``ConfigGate`` and
``held_templates`` here), so the API never sees the clear value and the
stored execution keeps the template. The action runner renders it; from then
on, the run's clear secrets are scrubbed out of what it records:

| clear secrets of one run                    | where they come from                           |
| ------------------------------------------- | ---------------------------------------------- |
| values of ``secret: true`` parameters       | the rendered values, at the schema's secret    |
| (nested properties and items too)           | positions                                      |
| datastore items decrypted by ``decrypt_kv`` | ``RenderedValues.revealed`` (render_final)     |
| pack config options marked secret           | ``PackConfig.secret_values()``                 |

The action runner calls ``guard`` once the parameters are rendered: the run's
output callback is wrapped so every chunk is scrubbed before it is stored or
published, and the run's Scrubber is registered until ``release`` scrubs its
result. While registered, a log filter scrubs the same values out of every log
line of the process.

What the run stored is scrubbed for good: ``show_secrets=true`` shows secret
parameters (stored in clear, as StackStorm stores them) but cannot bring back a
secret that was masked in stdout. Each value is also matched line by line (a
multi-line key printed a line at a time) and JSON-escaped. Values shorter than
MIN_LENGTH characters, and booleans, are not scrubbed: replacing every "1" or
"yes" in a run's output would destroy it while hiding nothing worth hiding.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from st2common.exceptions import ValidationError
from st2common.models.api.base import MASKED, has_secrets, secret_values
from st2common.templating import contains_template, revealed, variables

if TYPE_CHECKING:
    from st2common.runners.base import RunResult

MASK = MASKED
MIN_LENGTH = 4

# Scrubbers of the runs in progress in this process, by execution id (the log filter reads them).
_ACTIVE: dict[str, "Scrubber"] = {}


def _texts(value: Any) -> Iterable[str]:
    """The forms in which one clear value can show up in text."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ()
    text = str(value)
    forms = {text, text.strip(), json.dumps(text)[1:-1]}
    forms.update(line.strip() for line in text.splitlines())
    return (form for form in forms if len(form) >= MIN_LENGTH)


class Scrubber:
    """Replaces known clear secret values by ******** in text and in nested values."""

    def __init__(self, secrets: Iterable[Any] = ()) -> None:
        needles = {form for value in secrets for form in _texts(value)}
        self._needles = frozenset(needles)
        # Longest first, so a value is masked whole rather than around a shorter one inside it.
        ordered = sorted(needles, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(n) for n in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        """text with every known secret replaced."""
        if self._pattern is None or not isinstance(text, str):
            return text
        return self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """value with every known secret replaced in its strings, keys included, and numbers equal to one."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in self._needles:
            # stdout that was only a numeric secret was parsed as JSON into a number.
            return MASK
        return value

    def output(self, callback: Callable[[str, str], None]) -> Callable[[str, str], None]:
        """An output callback passing each chunk on scrubbed."""
        if self._pattern is None:
            return callback

        def scrubbed(stream: str, data: str) -> None:
            callback(stream, self.text(data))

        return scrubbed


def parameter_secrets(definitions: Mapping[str, Any], values: Mapping[str, Any]) -> list[Any]:
    """The values of secret parameters (and of secret properties nested in object parameters)."""
    return [leaf for name, value in values.items() for leaf in secret_values(value, definitions.get(name))]


def guard(execution_id: str, schema, values: Mapping[str, Any], config_secrets: Iterable[Any] = ()) -> Scrubber:
    """The Scrubber of a run about to start, registered until release; schema a ParameterSchema.

    values are render_final's (their ``revealed`` are the items it decrypted);
    config_secrets the pack config's secret values.
    """
    secrets = [*parameter_secrets(schema.definitions, values), *getattr(values, "revealed", ()), *config_secrets]
    scrubber = Scrubber(secrets)
    if scrubber:
        _ACTIVE[execution_id] = scrubber
        _install_log_filter()
    return scrubber


def release(execution_id: str, result: "RunResult") -> "RunResult":
    """The run's result with its secrets scrubbed; the run's Scrubber is forgotten."""
    scrubber = _ACTIVE.pop(execution_id, None)
    if not scrubber:
        return result
    return replace(result, result=scrubber.value(result.result))


def keep(key: str, scrubber: Scrubber | None) -> None:
    """Register (or, given None, forget) a Scrubber under key for the log filter, outside any run."""
    if scrubber:
        _ACTIVE[key] = scrubber
        _install_log_filter()
    else:
        _ACTIVE.pop(key, None)


def scrub_active(text: str) -> str:
    """text with the secrets of every run in progress in this process replaced."""
    for scrubber in list(_ACTIVE.values()):
        text = scrubber.text(text)
    return text


class ActiveSecretsFilter(logging.Filter):
    """Masks the clear secrets of the runs in progress in every record's rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _ACTIVE:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record is the logging module's to report
            return True
        masked = scrub_active(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # A traceback can quote the secret too: format it now, scrubbed, so handlers print that.
            record.exc_text = scrub_active(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = scrub_active(record.exc_text)
        return True


_LOG_FILTER = ActiveSecretsFilter()


def _install_log_filter() -> None:
    # On the handlers, not a logger: records of child loggers skip the root logger's own filters.
    # Done when a run with secrets starts, so handlers set up after start-up are covered too.
    for handler in logging.getLogger().handlers:
        if _LOG_FILTER not in handler.filters:
            handler.addFilter(_LOG_FILTER)


# -- request time: templates that read secrets are held back ----------------------------------------

def decrypts(value: Any) -> bool:
    """True for a template (or a list or dict holding one) that decrypts a datastore item."""
    return contains_template(value) and "decrypt_kv" in repr(value)


class ConfigGate(Mapping):
    """``config_context`` at request time: an option that is (or holds) a secret is not read (nor
    decrypted); the template sees MASK for it and the read is counted, so it is held for the run."""

    def __init__(self, config: Mapping[str, Any], pack: str | None) -> None:
        # Private names only: a template's ``config_context.x`` reaches an attribute before an option.
        self._config = config
        self._pack = pack
        self._secret: frozenset[str] | None = None
        self._reads = 0

    def _secret_options(self) -> frozenset[str]:
        if self._secret is None:
            from st2common.services.configs import get_schema

            attributes = (get_schema(self._pack) or {}) if self._pack else {}
            self._secret = frozenset(name for name, spec in attributes.items() if has_secrets(spec))
        return self._secret

    def __getitem__(self, key: str) -> Any:
        if key in self._secret_options():
            self._reads += 1
            return MASK
        return self._config[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._config)

    def __len__(self) -> int:
        return len(self._config)


def secret_reads(scope: Mapping[str, Any]) -> Callable[[], int]:
    """A counter of the secrets read through a render scope so far: decrypted items, gated options."""
    decrypted = revealed(scope)
    gate = scope.get("config_context")
    if isinstance(gate, ConfigGate):
        return lambda: len(decrypted) + gate._reads
    return lambda: len(decrypted)


def held_templates(stored: Mapping[str, Any], secret_holders: Iterable[str]) -> set[str]:
    """The stored parameter values that are templates held back at request time, by the same marks:
    they decrypt, or refer to config_context, a secret parameter or another held one."""
    refs: dict[str, frozenset[str]] = {}
    for name, value in stored.items():
        if contains_template(value):
            try:
                refs[name] = variables(value)
            except ValidationError:
                continue  # text that only looks like a template (rendered from {% raw %}): a literal
    sources = frozenset(secret_holders) | {"config_context"}
    held = {name for name, names in refs.items() if decrypts(stored[name]) or names & sources}
    while True:
        more = {name for name, names in refs.items() if name not in held and names & held}
        if not more:
            return held
        held |= more
