"""The mail engine's core, shared by every SMTP server: lookups, auth, durable acceptance.

Everything that blocks (database, password hashing, file writes, fsync) runs in a
thread pool, so one large or slow message never stalls other sessions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import ParamSpec, TypeVar

from mailhost import lmtp
from mailhost.directory import Directory, LocalMailbox, Route
from mailhost.dkim_sign import sign as dkim_sign
from mailhost.dnsbl import DnsblChecker
from mailhost.durability import GroupCommitter, Rename
from mailhost.errors import DeliveryError, TemporaryFailure
from mailhost.filters import Pipeline, build_pipeline
from mailhost.filters.auth import from_domains
from mailhost.limits import ConnectionCounter, SlidingWindow, network_of
from mailhost.maildir import MaildirStore
from mailhost.spool import LOCAL_PREFIX, Buffer, MessageHeader, Spool, new_id
from mailhost.stats import MailCounters
from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.services import dkim as dkim_keys
from provisioning.services import domains as domain_service
from provisioning.services import mailboxes
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Accepted:
    queue_id: str
    local: int
    queued: int


class Engine:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.directory = Directory(db)
        state = settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        self.committer = GroupCommitter(state, mode=settings.smtp.durability)
        self.spool = Spool(state / "spool", self.committer)
        self.store = MaildirStore(
            settings.maildir_root, settings.mail_owner(), fsync=self.committer.writers_fsync
        )
        sub = settings.submission
        self.auth_failures_by_network = SlidingWindow(
            sub.auth_failures_per_network, sub.auth_window
        )
        self.auth_failures_by_account = SlidingWindow(
            sub.auth_failures_per_account, sub.auth_window
        )
        self.sent_by_account = SlidingWindow(sub.messages_per_hour, 3600)
        self.connections = ConnectionCounter(settings.smtp.max_connections_per_ip)
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="engine")
        # DNS blocklists of MX clients; one per process (its cache and resolver).
        self.dnsbl = DnsblChecker.from_settings(settings)
        self._domain_filters: dict[str, tuple[float, domain_service.DomainFilters | None]] = {}
        # Content filters (ClamAV, rspamd) between DATA and 250; one per process.
        self.pipeline: Pipeline = build_pipeline(settings, domain_filters=self.domain_filters)
        self.on_queued: Callable[[], None] | None = None
        # Mail accepted, refused, viruses, spam: counted here, flushed by server.serve.
        self.stats = MailCounters()
        self._routes: dict[tuple[str, bool], tuple[float, Route | DeliveryError]] = {}

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking work in the engine's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(func, *args, **kwargs))

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.committer.close()

    # -- recipients and senders ---------------------------------------------------------

    async def route(self, address: str, *, relay_allowed: bool, size: int) -> Route:
        """Where a RCPT goes (cached briefly, answers and refusals alike), quota checked."""
        route = await self._lookup(address, relay_allowed)
        for mailbox in route.local:
            usage = self.store.cached_usage(mailbox.key)
            if usage is None:
                await self.run(self.store.check_quota, mailbox.key, mailbox.quota, size)
            else:
                self.store.check_quota(mailbox.key, mailbox.quota, size, usage)
        return route

    async def _lookup(self, address: str, relay_allowed: bool) -> Route:
        key = (address.lower(), relay_allowed)
        now = time.monotonic()
        cached = self._routes.get(key)
        if cached is not None and cached[0] > now:
            result = cached[1]
        else:
            try:
                result = await self.run(self.directory.route, address, relay_allowed=relay_allowed)
            except DeliveryError as exc:
                result = exc
            ttl = self.settings.smtp.lookup_cache
            if ttl > 0:
                if len(self._routes) > 100_000:
                    self._routes.clear()
                self._routes[key] = (now + ttl, result)
        if isinstance(result, DeliveryError):
            raise result
        return result

    async def domain_filters(
        self, domains: Sequence[str]
    ) -> dict[str, domain_service.DomainFilters]:
        """The own filter settings of the hosted domains among `domains` (ASCII names).

        Read in a worker thread and reused for `smtp.lookup_cache`, like recipient
        lookups, so a change made with `muninet domain filters` applies within seconds.
        """
        now = time.monotonic()
        wanted = {d.lower() for d in domains}
        stale = [d for d in wanted if (c := self._domain_filters.get(d)) is None or c[0] <= now]
        fresh: dict[str, domain_service.DomainFilters] = {}
        if stale:
            fresh = await self.run(self._read_domain_filters, stale)
            ttl = self.settings.smtp.lookup_cache
            if ttl > 0:
                if len(self._domain_filters) > 10_000:
                    self._domain_filters.clear()
                for name in stale:
                    self._domain_filters[name] = (now + ttl, fresh.get(name))
        found: dict[str, domain_service.DomainFilters] = {}
        for name in wanted:
            own = fresh.get(name) if name in stale else self._domain_filters[name][1]
            if own is not None:
                found[name] = own
        return found

    def _read_domain_filters(self, names: list[str]) -> dict[str, domain_service.DomainFilters]:
        with self.db.reader() as session:
            return domain_service.filter_overrides(session, names)

    def spool_recipient(self, address: str) -> str:
        """Where a bounce to `address` goes: a hosted mailbox (LOCAL_PREFIX + key) or out."""
        try:
            route = self.directory.route(address, relay_allowed=True)
        except DeliveryError:
            return address
        return LOCAL_PREFIX + route.local[0].key if route.local else address

    async def dkim_sign(self, data: bytes) -> bytes:
        """Sign outgoing mail with the active DKIM keys of its From domain, if it has any."""
        return await self.run(self._dkim_sign, data)

    def _dkim_sign(self, data: bytes) -> bytes:
        domains = from_domains(data)
        if domains is None or len(domains) != 1:
            return data  # no single author domain: nothing we could sign for
        with self.db.reader() as session:
            keys = dkim_keys.signing_keys(session, domains[0])
        return dkim_sign(data, domains[0], keys) if keys else data

    async def is_hosted(self, address: str) -> bool:
        """Whether an address is in one of our domains (a local process's sender)."""
        return await self.run(self.directory.is_hosted, address)

    async def may_send_as(self, login: str, sender: str) -> bool:
        return await self.run(self.directory.may_send_as, login, sender)

    # -- authentication -----------------------------------------------------------------

    def auth_blocked(self, ip: str, login: str) -> bool:
        return self.auth_failures_by_network.exceeded(
            network_of(ip)
        ) or self.auth_failures_by_account.exceeded(login.lower())

    async def authenticate(self, ip: str, login: str, password: str) -> str | None:
        """The mailbox key on success; failures count against the network and the account."""
        key = await self.run(self._check_password, login, password)
        if key is None:
            self.auth_failures_by_network.add(network_of(ip))
            self.auth_failures_by_account.add(login.lower())
            log.warning("AUTH failed for %r from %s", login, ip)
        return key

    def _check_password(self, login: str, password: str) -> str | None:
        with self.db.transaction() as session:
            ctx = ServiceContext(
                session=session, actor=Actor("system", "smtp-auth"), settings=self.settings
            )
            mailbox = mailboxes.authenticate(ctx, login, password)
            return mailbox.address if mailbox else None

    # -- accepting a message ------------------------------------------------------------

    async def accept(
        self,
        *,
        mail_from: str,
        routes: list[Route],
        parts: list[Buffer],
        smtputf8: bool,
        auth_user: str | None,
    ) -> Accepted:
        """Store a message durably: local copies into Maildirs, the rest into the spool.

        Returns only after one group-commit flush covers every file; raises
        TemporaryFailure if anything could not be stored (the client will retry).
        """
        queue_id = new_id()
        local: list[LocalMailbox] = []
        remote: list[str] = []
        for route in routes:
            local.extend(m for m in route.local if m not in local)
            remote.extend(a for a in route.remote if a not in remote)
        renames: list[Rename]
        if self.settings.delivery.method == "lmtp":
            renames, deferred = [], await self.run(self._deliver_lmtp, mail_from, local, parts)
        else:
            renames, deferred = await self.run(self._prepare_local, local, parts)
        pending = [*remote, *(LOCAL_PREFIX + key for key in deferred)]
        if pending:
            header = MessageHeader(
                id=queue_id,
                mail_from=mail_from,
                recipients=pending,
                received_at=time.time(),
                size=sum(len(part) for part in parts),
                smtputf8=smtputf8,
                auth_user=auth_user,
            )
            try:
                renames.append(await self.run(self.spool.prepare, header, parts))
            except OSError as exc:
                raise TemporaryFailure(
                    451, f"cannot queue: {exc.strerror}", enhanced="4.3.0"
                ) from exc
        try:
            await self.committer.commit(renames)
        except OSError as exc:
            raise TemporaryFailure(451, f"cannot store: {exc.strerror}", enhanced="4.3.0") from exc
        if pending and self.on_queued is not None:
            self.on_queued()
        return Accepted(queue_id, len(local) - len(deferred), len(pending))

    def _prepare_local(
        self, mailboxes_: list[LocalMailbox], parts: list[Buffer]
    ) -> tuple[list[Rename], list[str]]:
        renames: list[Rename] = []
        deferred: list[str] = []
        for mailbox in mailboxes_:
            try:
                renames.append(self.store.prepare(mailbox.key, parts))
            except DeliveryError as exc:
                log.warning("local delivery to %s deferred: %s", mailbox.key, exc)
                deferred.append(mailbox.key)
        return renames, deferred

    def _deliver_lmtp(
        self, mail_from: str, mailboxes_: list[LocalMailbox], parts: list[Buffer]
    ) -> list[str]:
        """Deliver through Dovecot; returns the keys to retry from the spool."""
        if not mailboxes_:
            return []
        outcome = lmtp.deliver(
            str(self.settings.lmtp_socket),
            mail_from,
            [m.key for m in mailboxes_],
            b"".join(parts),
        )
        deferred = [key for key, failure in outcome.items() if failure is not None]
        for key in deferred:
            log.warning("LMTP delivery to %s deferred: %s", key, outcome[key])
        return deferred

    async def deliver_local(self, key: str, data: bytes, mail_from: str = "") -> None:
        """Retry of a deferred local delivery (used by the queue runner)."""
        if self.settings.delivery.method == "lmtp":
            outcome = await self.run(
                lmtp.deliver, str(self.settings.lmtp_socket), mail_from, [key], data
            )
            failure = outcome[key]
            if failure is not None:
                raise failure
            return
        rename = await self.run(self.store.prepare, key, [data])
        await self.committer.commit([rename])
