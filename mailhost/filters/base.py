"""The filter pipeline: what a filter sees, what it answers, and how answers combine.

A filter looks at one message after DATA and before the `250`, and answers with a
`Verdict`: accept (maybe with headers to add), reject (`5xx`, refused in the SMTP
conversation, so no bounce is ever sent) or tempfail (`4xx`, the client retries).
Filters are coroutines that never block the event loop: they talk to their daemons
over async sockets, and anything that blocks (file writes) goes to a thread.

`Pipeline.run` takes the filters' verdicts in order; the first reject or tempfail
decides, and the headers of every filter before it accumulate in order. The filters
may run one after the other or all at once (what the MX does: clamd and rspamd
scan the same message at the same time); the answer is the same. Counters per filter
(accepted, rejected, tempfail, errors, and labels such as `viruses`) are kept in
memory, per process, for the admin dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from provisioning.services.domains import DomainFilters

log = logging.getLogger(__name__)

# The own filter settings of the hosted domains among the ASCII names given (the
# recipient domains of a message); the engine's is cached and never blocks the loop.
DomainFiltersLookup = Callable[[Sequence[str]], Awaitable[Mapping[str, DomainFilters]]]

_UNSAFE = re.compile(r"[^\x20-\x7e]")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII but ':'
_FOLD_AT = 78


class Action(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True)
class MessageInfo:
    """One message as the SMTP server received it, with its envelope."""

    data: bytes  # the whole message as received: headers and body, CRLF line endings
    mail_from: str  # the envelope sender; "" for the null sender <>
    recipients: list[str]
    recipient_domains: list[str]  # ASCII (punycode) domains of the recipients
    client_ip: str
    helo: str
    auth_user: str | None = None  # the AUTH login on submission; None on the MX
    # The client's forward-confirmed reverse DNS name, if the SMTP server looked it
    # up; None: the spam filter looks it up itself (rspamd scores a missing one).
    client_hostname: str | None = None


@dataclass(frozen=True)
class SocketAddress:
    """Where a filter daemon listens: a unix socket path, or a TCP host and port."""

    path: str | None = None
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> SocketAddress:
        """`/run/clamd.sock` (any value with a `/`), `host:port` or `[v6]:port`."""
        text = text.strip()
        if "/" in text:
            return cls(path=text)
        host, sep, port = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not a socket path or host:port: {text!r}")
        return cls(host=host, port=int(port))

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def clean_text(text: str) -> str:
    """Printable ASCII only, for SMTP replies and header values (no CR/LF injection)."""
    return _UNSAFE.sub("?", text).strip()


@dataclass(frozen=True)
class Verdict:
    """One filter's answer. `code`, `enhanced` and `text` make the SMTP reply."""

    action: Action
    code: int = 250
    enhanced: str = "2.0.0"
    text: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # What to count for the dashboard besides the action, e.g. ("viruses",).
    labels: tuple[str, ...] = ()
    # A side effect of the refusal (a quarantine copy), run by the pipeline only if
    # this verdict decides the message: in the concurrent pipeline a later filter's
    # refusal may be overruled by an earlier one (a virus is not kept as spam).
    keep: Callable[[], Awaitable[object]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        first = {Action.ACCEPT: 2, Action.REJECT: 5, Action.TEMPFAIL: 4}[self.action]
        if not 200 <= self.code <= 599 or self.code // 100 != first:
            raise ValueError(f"{self.action} needs a {first}xx code, not {self.code}")
        if not self.enhanced.startswith(f"{first}."):
            raise ValueError(f"{self.action} needs a {first}.x.x enhanced code")
        for name, value in self.headers:
            if not _HEADER_NAME.match(name) or clean_text(value) != value:
                raise ValueError(f"header {name!r} is not a safe header line")

    @classmethod
    def accept(cls, headers: Iterable[tuple[str, str]] = (), *labels: str) -> Verdict:
        return cls(Action.ACCEPT, headers=list(headers), labels=labels)

    @classmethod
    def reject(
        cls,
        code: int,
        enhanced: str,
        text: str,
        *labels: str,
        headers: Iterable[tuple[str, str]] = (),
        keep: Callable[[], Awaitable[object]] | None = None,
    ) -> Verdict:
        return cls(Action.REJECT, code, enhanced, clean_text(text), list(headers), labels, keep)

    @classmethod
    def tempfail(
        cls,
        code: int,
        enhanced: str,
        text: str,
        *labels: str,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Verdict:
        return cls(Action.TEMPFAIL, code, enhanced, clean_text(text), list(headers), labels)

    @property
    def reply(self) -> str:
        """The SMTP reply line, e.g. `554 5.7.1 Virus found: Eicar-Test-Signature`."""
        return f"{self.code} {self.enhanced} {self.text}".rstrip()


@runtime_checkable
class Filter(Protocol):
    """A content filter. `check` must not block the event loop."""

    name: str

    async def check(self, message: MessageInfo) -> Verdict: ...


@runtime_checkable
class Closable(Protocol):
    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class PipelineResult:
    """The combined answer of all filters that ran."""

    action: Action
    reply: str | None  # the SMTP reply for reject/tempfail; None when accepted
    headers: list[tuple[str, str]]  # from every filter that ran, in order
    decided_by: str | None  # the filter that rejected or tempfailed
    verdicts: list[tuple[str, Verdict]]  # (filter name, verdict) of each filter that ran
    strip_headers: frozenset[str] = frozenset()  # lower-case names the filters own

    @property
    def accepted(self) -> bool:
        return self.action is Action.ACCEPT

    def header_block(self, newline: bytes = b"\r\n") -> bytes:
        """The added headers as folded header lines, ready to put in front of a message."""
        return b"".join(fold_header(name, value, newline) for name, value in self.headers)

    def apply(self, data: bytes) -> bytes:
        """The message to store: our headers on top, forged copies of them removed.

        A sender could write its own `X-Spam-Flag` or `X-Muninet-Antivirus`; every
        header a configured filter may add is removed from the incoming header
        section (the body is untouched) before the filters' own are prepended.
        """
        newline = b"\n" if _first_line_ending(data) == b"\n" else b"\r\n"
        body = strip_header_fields(data, self.strip_headers) if self.strip_headers else data
        return self.header_block(newline) + body


def fold_header(name: str, value: str, newline: bytes = b"\r\n") -> bytes:
    """`Name: value` folded at spaces so lines stay near 78 characters (RFC 5322 2.2.3)."""
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}:"
    for word in words:
        if not word:
            continue
        if len(current) + 1 + len(word) > _FOLD_AT and current != f"{name}:":
            lines.append(current)
            current = "\t" + word
        else:
            current += " " + word
    lines.append(current)
    return newline.join(line.encode("ascii") for line in lines) + newline


def _first_line_ending(data: bytes) -> bytes:
    index = data.find(b"\n")
    if index > 0 and data[index - 1 : index] == b"\r":
        return b"\r\n"
    return b"\n" if index >= 0 else b"\r\n"


def strip_header_fields(data: bytes, names: Iterable[str]) -> bytes:
    """The message without the header fields named (case-insensitive), continuations included.

    Only the header section, up to the first empty line, is looked at.
    """
    wanted = {name.lower().encode("ascii") for name in names}
    out: list[bytes] = []
    position = 0
    dropping = False
    while position < len(data):
        end = data.find(b"\n", position)
        end = len(data) if end < 0 else end + 1
        line = data[position:end]
        if line in (b"\r\n", b"\n"):  # end of the header section
            break
        if line[:1] in (b" ", b"\t"):  # a continuation of the previous field
            if not dropping:
                out.append(line)
        else:
            name = line.split(b":", 1)[0].strip().lower() if b":" in line else None
            dropping = name in wanted
            if not dropping:
                out.append(line)
        position = end
    out.append(data[position:])
    return b"".join(out)


@dataclass
class FilterStats:
    accepted: int = 0
    rejected: int = 0
    tempfail: int = 0
    errors: int = 0  # the filter raised: counted here, answered as a tempfail
    labels: Counter[str] = field(default_factory=Counter)

    def count(self, verdict: Verdict) -> None:
        if verdict.action is Action.ACCEPT:
            self.accepted += 1
        elif verdict.action is Action.REJECT:
            self.rejected += 1
        else:
            self.tempfail += 1
        self.labels.update(verdict.labels)

    def as_dict(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "tempfail": self.tempfail,
            "errors": self.errors,
            **dict(sorted(self.labels.items())),
        }


FILTER_ERROR = Verdict.tempfail(451, "4.3.0", "Temporary content filter failure, try again later")


class Pipeline:
    """The configured filters, run on every message.

    In order (the default), a reject or tempfail stops the pipeline: later filters
    do not run. With `concurrent=True` all filters start at once (a message waits
    for the slowest daemon, not for the sum of them) and their verdicts are taken in
    the same order: once one refuses, the later ones are cancelled and neither
    counted nor reported, so the answer, the headers and the counters are those of
    the sequential pipeline. Side effects of a refusal (quarantine copies) are the
    verdict's `keep`, run only for the verdict that decides: a message refused as a
    virus is never also kept as spam. If keeping fails, the answer is a 451.
    """

    def __init__(
        self,
        filters: Sequence[Filter],
        *,
        concurrent: bool = False,
        strip_headers: Iterable[str] = (),
    ) -> None:
        names = [f.name for f in filters]
        if len(set(names)) != len(names):
            raise ValueError(f"filter names must be unique: {names}")
        self.filters = list(filters)
        self.concurrent = concurrent
        self.strip_headers = frozenset(name.lower() for name in strip_headers)
        self._stats = {name: FilterStats() for name in names}

    @staticmethod
    async def _check(flt: Filter, message: MessageInfo) -> tuple[Verdict, bool]:
        """The filter's verdict, and whether it raised (then FILTER_ERROR)."""
        try:
            return await flt.check(message), False
        except Exception:
            log.exception("filter %s failed on a message from %s", flt.name, message.client_ip)
            return FILTER_ERROR, True

    async def _run_concurrent(self, message: MessageInfo) -> list[tuple[Verdict, bool]]:
        """All filters started at once, their verdicts taken in order up to the first
        refusal; the later ones are then cancelled, as if they had never run.

        Waiting in order is what keeps the outcome of the sequential pipeline: a
        virus found by the first filter wins over a spam refusal that came sooner.
        """
        tasks = [asyncio.ensure_future(self._check(f, message)) for f in self.filters]
        decided: list[tuple[Verdict, bool]] = []
        try:
            for task in tasks:
                decided.append(await task)
                if decided[-1][0].action is not Action.ACCEPT:
                    break
        finally:
            pending = [task for task in tasks if not task.done()]
            for task in pending:
                task.cancel()
            if pending:  # let them close what they had open before we answer
                await asyncio.wait(pending)
        return decided

    async def run(self, message: MessageInfo) -> PipelineResult:
        decided: list[tuple[Verdict, bool]] = []
        if self.concurrent:
            decided = await self._run_concurrent(message)
        else:
            for flt in self.filters:
                decided.append(await self._check(flt, message))
                if decided[-1][0].action is not Action.ACCEPT:
                    break
        ran: list[tuple[str, Verdict]] = []
        # Counted only for the filters whose verdict counts, in both modes alike.
        for flt, (verdict, failed) in zip(self.filters, decided, strict=False):
            stats = self._stats[flt.name]
            stats.errors += failed
            stats.count(verdict)
            ran.append((flt.name, verdict))
        headers: list[tuple[str, str]] = []
        for name, verdict in ran:
            headers.extend(verdict.headers)
            if verdict.action is not Action.ACCEPT:
                answer = verdict
                if verdict.keep is not None and not await self._keep(name, verdict, message):
                    answer = FILTER_ERROR
                return PipelineResult(
                    answer.action, answer.reply, headers, name, ran, self.strip_headers
                )
        return PipelineResult(Action.ACCEPT, None, headers, None, ran, self.strip_headers)

    async def _keep(self, name: str, verdict: Verdict, message: MessageInfo) -> bool:
        """Run the deciding refusal's side effect; False (counted as an error) if it failed."""
        assert verdict.keep is not None
        try:
            await verdict.keep()
        except Exception:
            log.exception("filter %s could not keep a message from %s", name, message.client_ip)
            self._stats[name].errors += 1
            return False
        return True

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per filter since this process started, e.g.
        `{"clamav": {"accepted": 10, "rejected": 1, "tempfail": 0, "errors": 0, "viruses": 1}}`.
        """
        return {name: stats.as_dict() for name, stats in self._stats.items()}

    async def aclose(self) -> None:
        """Close the filters' connections (HTTP clients)."""
        for flt in self.filters:
            if isinstance(flt, Closable):
                await flt.aclose()
