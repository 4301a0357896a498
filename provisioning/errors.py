"""Typed refusals that every face (CLI, web, API) turns into a clear message.

A service raises one of these instead of a generic exception so that a face can
map it to an exit code, a form error or an HTTP problem without parsing text.
"""


class MuninetError(Exception):
    """Base of every refusal muninet explains to its user."""

    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationError(MuninetError):
    """The input is malformed: bad syntax, out of range, wrong length."""

    http_status = 422


class NotFound(MuninetError):
    """The named object does not exist."""

    http_status = 404


class Conflict(MuninetError):
    """The object collides with one that exists, or is still in use."""

    http_status = 409


class LimitExceeded(MuninetError):
    """The change would exceed the member's service package."""

    http_status = 409


class NotPermitted(MuninetError):
    """The actor may not do this (wrong member, suspended member, ...)."""

    http_status = 403


class ConfigError(MuninetError):
    """The settings files or environment hold an invalid value."""


class NotMigrated(MuninetError):
    """The database schema is missing or older than this code expects."""
