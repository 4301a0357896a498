"""Spam: rspamd's `/checkv2` over HTTP (aiohttp), and the filter that acts on it.

rspamd scores the message; muninet decides with its own thresholds
(`spam.add_header_score`, `spam.reject_score`, or a hosted recipient domain's own,
set with `muninet domain filters`), so they differ per domain without
reconfiguring rspamd. A message for several domains is judged by the strictest
(lowest) threshold of each kind among them: one SMTP transaction has one answer.

- score >= reject_score, or a reject rspamd forces (GTUBE and other pre-results):
  `550 5.7.1`, refused in the conversation (no backscatter);
- score >= add_header_score: accepted with `X-Spam-Flag: YES`, which the global
  Sieve rule files into Junk;
- below: accepted.

Every checked message gets `X-Spam-Score` and `X-Spam-Status` (SpamAssassin's
style: `Yes, score=7.30 required=6.00`), and `X-Spam-Symbols` with the rules that
scored. rspamd's `soft reject` (rate limits, greylisting) becomes a `451`.
rspamd down or too slow: `spam.on_error` (deliver unchecked, or 451).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
from multidict import CIMultiDict

from mailhost.filters.base import (
    DomainFiltersLookup,
    MessageInfo,
    SocketAddress,
    Verdict,
    clean_text,
)
from mailhost.filters.quarantine import Quarantine
from mailhost.filters.rdns import ReverseDns
from provisioning.settings import Settings

log = logging.getLogger(__name__)

FLAG, SCORE, STATUS, SYMBOLS = "X-Spam-Flag", "X-Spam-Score", "X-Spam-Status", "X-Spam-Symbols"
# Headers we write, removed from incoming mail so a sender cannot forge them
# ("X-Spam" and "X-Spam-Level" are what other filters write; rspamd asks to drop them).
OWNED_HEADERS = (FLAG, SCORE, STATUS, SYMBOLS, "X-Spam-Level", "X-Spam")
MAX_SYMBOLS = 40


class RspamdError(Exception):
    """rspamd could not be reached or gave no usable answer."""


@dataclass(frozen=True)
class SpamResult:
    score: float
    action: str  # rspamd's: "no action", "greylist", "add header", "rewrite subject", ...
    forced: bool  # a pre-result (e.g. GTUBE) decided, not the score
    message: str | None = None  # rspamd's smtp_message, if any
    symbols: Mapping[str, float] = field(default_factory=dict)  # name -> score


def parse_result(body: Any) -> SpamResult:
    """The fields muninet uses from a /checkv2 JSON answer, or RspamdError."""
    if not isinstance(body, dict):
        raise RspamdError("rspamd's answer is not a JSON object")
    score, action = body.get("score"), body.get("action")
    if not isinstance(score, int | float) or not math.isfinite(score):
        raise RspamdError(f"rspamd's answer has no score: {body!r:.200}")
    if not isinstance(action, str):
        raise RspamdError(f"rspamd's answer has no action: {body!r:.200}")
    symbols: dict[str, float] = {}
    raw_symbols = body.get("symbols")
    if isinstance(raw_symbols, dict):
        for name, info in raw_symbols.items():
            value = info.get("score") if isinstance(info, dict) else None
            if isinstance(value, int | float):
                symbols[str(name)] = float(value)
    messages = body.get("messages")
    text = messages.get("smtp_message") if isinstance(messages, dict) else None
    return SpamResult(
        score=float(score),
        action=action,
        forced=body.get("is_skipped") is True,
        message=text if isinstance(text, str) else None,
        symbols=symbols,
    )


def _header_value(text: str) -> str:
    """An HTTP header value for rspamd: no CR/LF; aiohttp sends it as UTF-8 (SMTPUTF8)."""
    return text.replace("\r", "").replace("\n", "")


class RspamdClient:
    """rspamd's normal worker, by unix socket path or `host:port`.

    aiohttp, with kept-alive connections: per check it costs about a third of the CPU
    of httpx, measured on the same rspamd (bench/README.md, scenario 3). The session
    is made on first use, in the event loop that uses it.
    """

    def __init__(self, address: str | SocketAddress, *, timeout: float = 20) -> None:
        self.address = (
            address if isinstance(address, SocketAddress) else SocketAddress.parse(address)
        )
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._base = "http://rspamd" if self.address.path is not None else f"http://{self.address}"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = (
                aiohttp.UnixConnector(path=self.address.path)
                if self.address.path is not None
                else aiohttp.TCPConnector()
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                skip_auto_headers=["User-Agent", "Content-Type"],
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http().get(f"{self._base}/ping") as response:
                    text = await response.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
        return response.status == 200 and text.strip() == "pong"

    async def check(self, message: MessageInfo, *, hostname: str | None = None) -> SpamResult:
        """rspamd's verdict; `hostname` is the client's verified name, if known."""
        headers: list[tuple[str, str]] = [
            ("IP", _header_value(message.client_ip)),
            ("Helo", _header_value(message.helo)),
            ("From", _header_value(message.mail_from)),
        ]
        if hostname:
            headers.append(("Hostname", _header_value(hostname)))
        headers += [("Rcpt", _header_value(rcpt)) for rcpt in message.recipients]
        if message.auth_user:
            headers.append(("User", _header_value(message.auth_user)))
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http().post(
                    f"{self._base}/checkv2", data=message.data, headers=CIMultiDict(headers)
                ) as response:
                    status, body = response.status, await response.read()
        except TimeoutError as exc:
            raise RspamdError(
                f"rspamd at {self.address} did not answer within {self.timeout:g}s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RspamdError(f"rspamd at {self.address}: {exc or type(exc).__name__}") from exc
        if status != 200:
            text = body.decode("utf-8", "replace")
            raise RspamdError(f"rspamd answered HTTP {status}: {text:.200}")
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise RspamdError("rspamd's answer is not JSON") from exc
        return parse_result(parsed)


class SpamFilter:
    name = "spam"
    OWNED_HEADERS = OWNED_HEADERS

    def __init__(
        self,
        client: RspamdClient,
        *,
        add_header_score: float = 6.0,
        reject_score: float = 15.0,
        on_error: str = "accept",
        max_size: int = 10 * 1024 * 1024,
        quarantine: Quarantine | None = None,
        rdns: ReverseDns | None = None,
        domain_filters: DomainFiltersLookup | None = None,
    ) -> None:
        if on_error not in {"tempfail", "accept"}:
            raise ValueError(f"on_error must be tempfail or accept, not {on_error!r}")
        if add_header_score > reject_score:
            raise ValueError("add_header_score must not be above reject_score")
        self.client = client
        self.add_header_score = add_header_score
        self.reject_score = reject_score
        self.on_error = on_error
        self.max_size = max_size
        self.quarantine = quarantine
        self.rdns = rdns
        self.domain_filters = domain_filters

    @classmethod
    def from_settings(
        cls, settings: Settings, *, domain_filters: DomainFiltersLookup | None = None
    ) -> SpamFilter:
        from provisioning.render_filters import rspamd_address

        spam = settings.spam
        return cls(
            RspamdClient(rspamd_address(settings), timeout=spam.timeout),
            add_header_score=spam.add_header_score,
            reject_score=spam.reject_score,
            on_error=spam.on_error,
            max_size=spam.max_size,
            quarantine=Quarantine(settings.state_dir / "quarantine" / "spam")
            if spam.quarantine
            else None,
            rdns=ReverseDns(settings.dns),
            domain_filters=domain_filters,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def check(self, message: MessageInfo) -> Verdict:
        if len(message.data) > self.max_size:
            return Verdict.accept((), "skipped")
        hostname = message.client_hostname
        if hostname is None and self.rdns is not None:
            hostname = await self.rdns.verified_name(message.client_ip)
        try:
            result = await self.client.check(message, hostname=hostname)
        except RspamdError as exc:
            log.warning("spam check of a message from [%s] failed: %s", message.client_ip, exc)
            if self.on_error == "tempfail":
                return Verdict.tempfail(
                    451, "4.7.1", "Spam filter unavailable, try again later", "unavailable"
                )
            return Verdict.accept([(STATUS, "Unknown, spam filter unavailable")], "unavailable")
        return await self.decide(message, result)

    async def thresholds(self, message: MessageInfo) -> tuple[float, float]:
        """(add-header score, reject score) for this message: the lowest of each among
        its recipient domains, each domain's own value or else the global one."""
        if self.domain_filters is None or not message.recipient_domains:
            return self.add_header_score, self.reject_score
        try:
            own = await self.domain_filters(message.recipient_domains)
        except Exception:  # the database is down: the global thresholds still protect
            log.exception("per-domain spam thresholds unavailable; using the global ones")
            return self.add_header_score, self.reject_score
        adds, rejects = [], []
        for domain in message.recipient_domains:
            found = own.get(domain)
            add = found.spam_add_header_score if found is not None else None
            reject = found.spam_reject_score if found is not None else None
            adds.append(self.add_header_score if add is None else add)
            rejects.append(self.reject_score if reject is None else reject)
        return min(adds), min(rejects)

    async def decide(self, message: MessageInfo, result: SpamResult) -> Verdict:
        if result.action == "soft reject":
            return Verdict.tempfail(
                451, "4.7.1", result.message or "Try again later", "soft_reject"
            )
        add_header_score, reject_score = await self.thresholds(message)
        if result.score >= reject_score or (result.forced and result.action == "reject"):
            log.info(
                "spam (score %.2f%s, reject at %.2f) from <%s> [%s] to %s: refused",
                result.score,
                ", forced" if result.forced else "",
                reject_score,
                message.mail_from,
                message.client_ip,
                ", ".join(message.recipients),
            )
            keep = None
            if self.quarantine is not None:
                keep = partial(self.quarantine.store, message, "spam", f"score {result.score:.2f}")
            return Verdict.reject(550, "5.7.1", "Message refused as spam", "spam", keep=keep)
        spam = result.score >= add_header_score or (
            result.forced and result.action in {"add header", "rewrite subject"}
        )
        headers: list[tuple[str, str]] = []
        if spam:
            headers.append((FLAG, "YES"))
        headers += [
            (SCORE, f"{result.score:.2f}"),
            (
                STATUS,
                f"{'Yes' if spam else 'No'}, score={result.score:.2f} "
                f"required={add_header_score:.2f}",
            ),
        ]
        scored = sorted((n, s) for n, s in result.symbols.items() if s != 0)[:MAX_SYMBOLS]
        if scored:
            headers.append((SYMBOLS, " ".join(clean_text(f"{n}({s:.2f})") for n, s in scored)))
        return Verdict.accept(headers, *(("tagged",) if spam else ()))
