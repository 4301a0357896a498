"""Who acts, and the audit record every change writes in its own transaction."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from provisioning.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """The one behind a change: an admin in the web UI, an API token, the CLI's user."""

    kind: str  # "cli", "admin", "token", "system"
    name: str
    source_address: str = ""

    @classmethod
    def cli(cls) -> Actor:
        """The shell user running `muninet`, as far as the OS tells (SUDO_USER first)."""
        try:
            user = os.environ.get("SUDO_USER") or getpass.getuser()
        except (KeyError, OSError):
            user = f"uid:{os.getuid()}"
        return cls(kind="cli", name=user, source_address="local")


def record(session: Session, actor: Actor, action: str, target: str, **details: Any) -> AuditEvent:
    """Add an audit event to the session; it commits or rolls back with the change."""
    event = AuditEvent(
        actor_kind=actor.kind,
        actor_name=actor.name,
        source_address=actor.source_address,
        action=action,
        target=target,
        details=details,
    )
    session.add(event)
    return event
