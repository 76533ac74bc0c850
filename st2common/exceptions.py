"""The one error tree. Branches follow what callers catch; data lives on attributes.

st2api/errors.py maps these to HTTP status codes; nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class StackStormBaseException(Exception):
    """Root of every error the platform raises on purpose."""

    def __init__(self, message: str = "", **data: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in data.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message


St2Error = StackStormBaseException


class ConfigError(StackStormBaseException):
    """The configuration is unusable (unknown option, bad value, malformed URL)."""

    def __init__(self, section: str | None, option: str | None, message: str) -> None:
        super().__init__(message, section=section, option=option)


class NotFoundError(StackStormBaseException):
    """A resource looked up by id or ref does not exist."""

    def __init__(self, resource: str, ref: Any, message: str | None = None) -> None:
        super().__init__(message or f'{resource} with ref or id "{ref}" not found', resource=resource, ref=ref)


class ConflictError(StackStormBaseException):
    """A write would duplicate a unique key; conflict_id names the existing record."""

    def __init__(self, message: str, conflict_id: Any = None) -> None:
        super().__init__(message, conflict_id=conflict_id)


class ValidationError(StackStormBaseException):
    """Input does not fit its schema; field names the offending path."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)


class ParameterError(ValidationError):
    """An action parameter is unknown, missing, of the wrong type or fails to render."""


class AccessDeniedError(StackStormBaseException):
    """The requester is known but not allowed to do this."""


class AuthError(StackStormBaseException):
    """The request carries no valid credentials."""


class ContentError(StackStormBaseException):
    """A pack file cannot be loaded or registered."""

    def __init__(self, message: str, pack: str | None = None, path: str | None = None,
                 line: int | None = None, field: str | None = None) -> None:
        where = path or pack or "?"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}", pack=pack, path=path, line=line, field=field, reason=message)


class TransitionError(StackStormBaseException):
    """A status change the state machine does not allow."""

    def __init__(self, record: str, record_id: Any, old: str, new: str) -> None:
        super().__init__(
            f"{record} {record_id} cannot go from {old!r} to {new!r}",
            record=record, record_id=record_id, old=old, new=new,
        )


class StaleRecordError(StackStormBaseException):
    """A conditional write found the record changed by someone else."""


class RunnerError(StackStormBaseException):
    """A runner could not run an action."""


class UnknownRunnerError(RunnerError):
    """No runner is registered under that name."""


class ActionTimeoutError(RunnerError):
    """An action ran past its timeout."""


class BusError(StackStormBaseException):
    """The message bus is unreachable or refused an operation."""


class DatabaseError(StackStormBaseException):
    """The database is unreachable or refused an operation."""


class ServiceError(StackStormBaseException):
    """A platform service failed to start, stop or report."""
