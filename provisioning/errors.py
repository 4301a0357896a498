"""Typed refusals that every face (CLI, web, API) turns into a clear message.

A service raises one of these instead of a generic exception so that a face can
map it to an exit code, a form error or an HTTP problem without parsing text.

The message is a gettext-style %-template with named parameters, e.g.
`NotFound("no mailbox %(address)r", address=address)`: `message` is the English text
(CLI, logs, audit, JSON API), while the web admin translates `template` and fills in
`params` (admin_ui.i18n.error_text). pybabel extracts the templates by the class names
(admin_ui/babel.cfg), so a message must be one string literal, never an f-string.
"""


class MuninetError(Exception):
    """Base of every refusal muninet explains to its user."""

    http_status = 400

    def __init__(self, message: str, /, **params: object) -> None:
        self.template = message
        self.params = params
        self.message = message % params if params else message
        # args hold the English text only, so that a copy or pickle keeps the message.
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class Term(str):
    """A word that a message takes as a parameter and that is translated too (a field name).

    It is the plain English word everywhere else; pybabel extracts `Term("...")` literals.
    """

    __slots__ = ()


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
