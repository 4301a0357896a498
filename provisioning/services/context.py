"""What every service call needs: the open transaction, who acts, and the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from provisioning.audit import Actor, record
from provisioning.passwords import PasswordHasher
from provisioning.settings import Settings


@dataclass
class ServiceContext:
    """One unit of work: services add to `session`; the caller commits or rolls back."""

    session: Session
    actor: Actor
    settings: Settings
    _hasher: PasswordHasher | None = field(default=None, repr=False)

    @property
    def hasher(self) -> PasswordHasher:
        if self._hasher is None:
            self._hasher = PasswordHasher(self.settings.passwords)
        return self._hasher

    def audit(self, action: str, target: str, **details: Any) -> None:
        record(self.session, self.actor, action, target, **details)
