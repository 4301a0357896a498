"""Who receives a message: recipient lookup, alias and catch-all expansion, senders' rights.

The SMTP servers ask here at RCPT time; answers come from muninet's database
through short read-only sessions, run in worker threads by the callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailhost.errors import PermanentFailure
from provisioning.addresses import address_key, parse_domain
from provisioning.db import Database
from provisioning.errors import ValidationError
from provisioning.models import Alias, Domain, Mailbox, Member, MemberStatus

MAX_ALIAS_DEPTH = 10


@dataclass(frozen=True)
class LocalMailbox:
    key: str
    quota: int


@dataclass
class Route:
    """Where one RCPT goes: local mailboxes and/or remote addresses."""

    local: list[LocalMailbox] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedAddress:
    local: str
    ascii_domain: str
    hosted: bool


class Directory:
    def __init__(self, db: Database) -> None:
        self.db = db

    def parse(self, session: Session, address: str) -> ParsedAddress:
        """Split an envelope address; refuse every form that hides a second route."""
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            raise PermanentFailure(553, "malformed address", enhanced="5.1.3")
        if "@" in local or local.startswith('"') or any(c in local for c in ":,<>[]\\ "):
            raise PermanentFailure(553, "address syntax not accepted here", enhanced="5.1.3")
        try:
            ascii_domain = parse_domain(domain).ascii
        except ValidationError:
            raise PermanentFailure(553, "malformed domain", enhanced="5.1.2") from None
        hosted = session.scalar(select(Domain.id).where(Domain.ascii_name == ascii_domain))
        return ParsedAddress(local, ascii_domain, hosted is not None)

    def route(self, address: str, *, relay_allowed: bool) -> Route:
        """The route for a RCPT, or a PermanentFailure with the SMTP reply."""
        with self.db.reader() as session:
            parsed = self.parse(session, address)
            if not parsed.hosted:
                if not relay_allowed:
                    raise PermanentFailure(554, "relay access denied", enhanced="5.7.1")
                return Route(remote=[address])
            route = Route()
            self._expand(session, parsed, route, depth=0, original=address)
            if not route.local and not route.remote:
                raise PermanentFailure(550, "mailbox unavailable", enhanced="5.2.1")
            return route

    def _expand(
        self, session: Session, parsed: ParsedAddress, route: Route, depth: int, original: str
    ) -> None:
        if depth > MAX_ALIAS_DEPTH:
            raise PermanentFailure(554, "alias nesting too deep", enhanced="5.4.6")
        key = address_key(parsed.local, parsed.ascii_domain)
        candidates = [key]
        if "+" in parsed.local:  # sub-addressing: user+tag@ falls back to user@
            candidates.append(address_key(parsed.local.split("+", 1)[0], parsed.ascii_domain))
        for candidate in candidates:
            if self._mailbox(session, candidate, route, original) or self._alias(
                session, candidate, route, depth
            ):
                return
        if self._alias(session, f"@{parsed.ascii_domain}", route, depth):
            return
        raise PermanentFailure(550, f"no such user here: {original}", enhanced="5.1.1")

    def _mailbox(self, session: Session, key: str, route: Route, original: str) -> bool:
        row = session.execute(
            select(Mailbox.address, Mailbox.quota_bytes, Mailbox.enabled, Member.status)
            .join(Member, Member.id == Mailbox.member_id)
            .where(Mailbox.address == key)
        ).one_or_none()
        if row is None:
            return False
        if not row.enabled or row.status is not MemberStatus.ACTIVE:
            raise PermanentFailure(550, f"mailbox disabled: {original}", enhanced="5.2.1")
        mailbox = LocalMailbox(row.address, row.quota_bytes)
        if mailbox not in route.local:
            route.local.append(mailbox)
        return True

    def _alias(self, session: Session, key: str, route: Route, depth: int) -> bool:
        alias = session.scalars(
            select(Alias).where(Alias.address == key, Alias.enabled.is_(True))
        ).one_or_none()
        if alias is None:
            return False
        if alias.member.status is not MemberStatus.ACTIVE:
            raise PermanentFailure(550, "mailbox disabled", enhanced="5.2.1")
        for destination in alias.destinations:
            parsed = self.parse(session, destination.address)
            if parsed.hosted:
                try:
                    self._expand(session, parsed, route, depth + 1, destination.address)
                except PermanentFailure:
                    continue  # one disabled target must not block the others
            elif destination.address not in route.remote:
                route.remote.append(destination.address)
        return True

    def is_hosted(self, address: str) -> bool:
        with self.db.reader() as session:
            try:
                return self.parse(session, address).hosted
            except PermanentFailure:
                return False

    def may_send_as(self, login_key: str, sender: str) -> bool:
        """An authenticated user may send as their own address or an alias that reaches them."""
        with self.db.reader() as session:
            try:
                parsed = self.parse(session, sender)
            except PermanentFailure:
                return False
            if not parsed.hosted:
                return False
            key = address_key(parsed.local, parsed.ascii_domain)
            if key == login_key:
                return True
            route = Route()
            try:
                self._alias(session, key, route, depth=0)
            except PermanentFailure:
                return False
            return any(m.key == login_key for m in route.local)
