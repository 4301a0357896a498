"""The queue runner: delivers what waits in the spool, retries, gives up, and bounces.

Each pass looks at every queued message whose next attempt is due and tries its
pending recipients: local ones (mailboxes whose delivery failed temporarily at
receipt) through `deliver_local`, remote ones through `OutboundDeliverer`. Then,
per recipient:

* accepted: done; the message is removed once no recipient is left;
* temporary failure (4xx, DNS trouble, unreachable): kept, and the message waits
  `queue.retry_schedule[attempts - 1]` (the last entry repeats);
* permanent failure (5xx, no such domain, null MX), or a temporary one when the
  message is older than `queue.max_age`: dropped, and the sender gets one DSN for
  all such recipients of this attempt (never when the sender is the null sender).

The DSN is queued durably before the message's state changes, so a crash in
between can duplicate a DSN but never lose one.

Processes coordinate through an exclusive `flock` on the message file, taken
before a message is read and held until its state is written: the server's runner
and a `muninet queue flush` from the command line never deliver the same message
at the same time, and a message being delivered is not deleted under the runner.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

from mailhost.dsn import RecipientStatus, bounce
from mailhost.errors import DeliveryError, TemporaryFailure
from mailhost.mx import SMTP_PORT
from mailhost.outbound import OutboundDeliverer, Result
from mailhost.spool import LOCAL_PREFIX, MessageBusy, QueuedMessage, Spool
from provisioning import queue
from provisioning.settings import Settings

log = logging.getLogger(__name__)

DeliverLocal = Callable[[str, bytes], Awaitable[None]]
Route = Callable[[str], str]


async def local_delivery_unavailable(key: str, data: bytes) -> None:
    """The `deliver_local` of processes that cannot write mailboxes (the CLI)."""
    raise TemporaryFailure(451, "local delivery is done by the running server", enhanced="4.3.0")


@dataclass
class RunReport:
    """What one pass did, counted in messages and recipients."""

    messages: int = 0  # messages attempted
    delivered: int = 0  # recipients delivered
    deferred: int = 0  # recipients kept for another attempt
    bounced: int = 0  # recipients given up on
    dsns: int = 0  # delivery status notifications queued
    finished: int = 0  # messages with nothing left, removed from the queue
    busy: int = 0  # messages another process was delivering

    def add(self, other: RunReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        text = (
            f"{self.messages} message(s) attempted: {self.delivered} recipient(s) delivered, "
            f"{self.deferred} deferred, {self.bounced} bounced; {self.dsns} DSN(s) queued"
        )
        if self.busy:
            text += f"; {self.busy} message(s) skipped, being delivered by another process"
        return text


@dataclass
class _Claim:
    fd: int
    message: QueuedMessage
    data: bytes


class QueueRunner:
    """Delivers due messages from `spool`; see the module docstring for the rules.

    `deliver_local(key, data)` stores a message in the hosted mailbox `key` and
    raises TemporaryFailure or PermanentFailure. `route(address)` says where a DSN
    to `address` goes: the address itself (remote) or LOCAL_PREFIX + mailbox key;
    the default sends every DSN as remote mail. `mx_port` is for tests and unusual
    setups whose remote MX servers listen on a port other than 25.
    """

    def __init__(
        self,
        spool: Spool,
        settings: Settings,
        deliver_local: DeliverLocal,
        *,
        route: Route | None = None,
        mx_port: int = SMTP_PORT,
        outbound: OutboundDeliverer | None = None,
    ) -> None:
        self.spool = spool
        self.settings = settings
        self.deliver_local = deliver_local
        self.route = route
        self.outbound = outbound or OutboundDeliverer(settings, mx_port=mx_port)
        self._wakeup = asyncio.Event()
        self._pass = asyncio.Lock()

    # -- driving ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Start a pass now (e.g. after new mail was queued); call it from the loop's thread."""
        self._wakeup.set()

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Pass after pass, every `queue.scan_interval` or at once after `wake()`."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:  # one bad pass must not stop mail for good
                log.exception("queue run failed")
            await self._pause(stop)

    async def _pause(self, stop: asyncio.Event) -> None:
        waiters = {asyncio.create_task(self._wakeup.wait()), asyncio.create_task(stop.wait())}
        try:
            await asyncio.wait(
                waiters,
                timeout=self.settings.queue.scan_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:  # also when run_forever itself is cancelled
            for task in waiters:
                task.cancel()

    async def flush(self, now: float | None = None) -> RunReport:
        """Make every message due and deliver them all now, in this process."""
        await asyncio.to_thread(queue.make_due, self.spool)
        return await self.run_once(now)

    async def run_once(self, now: float | None = None) -> RunReport:
        """One pass over the messages due at `now` (default: the current time)."""
        async with self._pass:
            self._wakeup.clear()
            when = time.time() if now is None else now
            report = RunReport()
            due = await asyncio.to_thread(self._due_ids, when)
            slots = asyncio.Semaphore(self.settings.queue.max_parallel)

            async def one(message_id: str) -> None:
                async with slots:
                    report.add(await self._process(message_id, when))

            try:
                await asyncio.gather(*(one(mid) for mid in due))
            finally:
                await self.outbound.close()
            if report.messages:
                log.info("queue run: %s", report.summary())
            return report

    def _due_ids(self, now: float) -> list[str]:
        due: list[str] = []
        for mid in self.spool.ids():
            try:
                if self.spool.load(mid).state.next_attempt <= now:
                    due.append(mid)
            except (KeyError, ValueError, TypeError):
                continue  # gone meanwhile, or torn (recover() sets those aside at start)
        return due

    # -- one message --------------------------------------------------------------------------

    async def _process(self, message_id: str, now: float) -> RunReport:
        try:
            claim = await asyncio.to_thread(self._claim, message_id, now)
        except MessageBusy:
            return RunReport(busy=1)
        except Exception:  # unreadable; recover() sets torn files aside at the next start
            log.exception("%s: cannot read the queued message", message_id)
            return RunReport()
        if claim is None:
            return RunReport()
        try:
            results = await self._attempt(claim.message, claim.data)
            report = await asyncio.to_thread(self._settle, claim, results, now)
        except Exception:
            log.exception("%s: delivery attempt failed", message_id)
            return RunReport()
        finally:
            os.close(claim.fd)
        if report.dsns:
            self.wake()  # deliver the notification without waiting for the next scan
        return report

    def _claim(self, message_id: str, now: float) -> _Claim | None:
        """Lock, then re-read the message: another process may have moved it on."""
        try:
            fd = self.spool.acquire(message_id)
        except KeyError:
            return None
        try:
            message = self.spool.load(message_id)
            if not message.state.pending:  # finished, but a crash kept the file
                self.spool.remove(message_id)
            elif message.state.next_attempt <= now:
                return _Claim(fd, message, self.spool.read_data(message_id))
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    async def _attempt(self, message: QueuedMessage, data: bytes) -> dict[str, Result]:
        pending = message.state.pending
        local = [r for r in pending if r.startswith(LOCAL_PREFIX)]
        remote = [r for r in pending if not r.startswith(LOCAL_PREFIX)]
        local_results = await asyncio.gather(*(self._deliver_local(r, data) for r in local))
        results = dict(zip(local, local_results, strict=True))
        if remote:
            try:
                results.update(await self.outbound.deliver(message.header, data, remote))
            except Exception as exc:  # a bug must defer the mail, not lose or spin on it
                log.exception("%s: outbound delivery failed", message.id)
                error = TemporaryFailure(451, f"internal error: {exc}", enhanced="4.3.0")
                results.update(dict.fromkeys(remote, Result(error)))
        return results

    async def _deliver_local(self, recipient: str, data: bytes) -> Result:
        try:
            await self.deliver_local(recipient.removeprefix(LOCAL_PREFIX), data)
        except DeliveryError as exc:
            return Result(exc)
        except Exception as exc:
            log.exception("local delivery to %s failed", recipient)
            return Result(TemporaryFailure(451, f"local delivery failed: {exc}", enhanced="4.3.0"))
        return Result(reply="stored")

    def _settle(self, claim: _Claim, results: dict[str, Result], now: float) -> RunReport:
        """Record the outcome (blocking): DSN first, then the new state or removal."""
        header, state = claim.message.header, claim.message.state
        expired = now - header.received_at >= self.settings.queue.max_age
        report = RunReport(messages=1)
        keep: list[str] = []
        failed: list[RecipientStatus] = []
        for rcpt in state.pending:
            result = results.get(rcpt)
            if result is None:  # not tried; should not happen, but never drop a recipient
                keep.append(rcpt)
            elif result.error is None:
                state.delivered.append(rcpt)
                report.delivered += 1
                self._log(header.id, rcpt, result, "sent")
            elif result.error.permanent or expired:
                failed.append(
                    RecipientStatus.from_error(
                        rcpt, result.error, action="failed", remote_mta=result.remote_mta
                    )
                )
                report.bounced += 1
                self._log(
                    header.id, rcpt, result, "bounced" if result.error.permanent else "expired"
                )
            else:
                keep.append(rcpt)
                state.last_errors[rcpt] = str(result.error)
                report.deferred += 1
                self._log(header.id, rcpt, result, "deferred")
        if failed:
            report.dsns = self._send_dsn(claim, failed, now)
        state.pending = keep
        state.last_errors = {r: e for r, e in state.last_errors.items() if r in keep}
        if keep:
            state.attempts += 1
            schedule = self.settings.queue.retry_schedule
            state.next_attempt = now + schedule[min(state.attempts, len(schedule)) - 1]
            self.spool.save_state(header.id, state)
        else:
            self.spool.remove(header.id)
            report.finished = 1
        return report

    def _send_dsn(self, claim: _Claim, failed: list[RecipientStatus], now: float) -> int:
        header = claim.message.header
        notice = bounce(
            header,
            claim.data,
            failed,
            hostname=self.settings.association.hostname,
            now=now,
            route=self.route,
        )
        if notice is None:
            log.info("%s: no DSN for the null sender", header.id)
            return 0
        dsn_header, body = notice
        self.spool.enqueue(dsn_header, body)
        log.info("%s: DSN %s queued for <%s>", header.id, dsn_header.id, header.mail_from)
        return 1

    @staticmethod
    def _log(message_id: str, rcpt: str, result: Result, status: str) -> None:
        relay = result.remote_mta or ("local" if rcpt.startswith(LOCAL_PREFIX) else "none")
        detail = result.reply if result.error is None else str(result.error)
        log.info("%s: to=<%s> relay=%s status=%s (%s)", message_id, rcpt, relay, status, detail)
