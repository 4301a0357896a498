"""The spam filter against a real rspamd (rendered by muninet; DNS from a local test zone)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from mailhost.filters.base import Action, Verdict
from mailhost.filters.rdns import ReverseDns
from mailhost.filters.spam import (
    RspamdClient,
    RspamdError,
    SpamFilter,
    SpamResult,
    parse_result,
)
from provisioning.render_filters import RspamdFiles

from filter_daemons import (
    CLIENT_HOST,
    CLIENT_IP,
    CLIENT_NO_RDNS,
    GTUBE,
    FilterEnv,
    info,
    plain_message,
)

pytest_plugins = ["filter_daemons"]
T = TypeVar("T")

CLEAN = plain_message(
    "Dzień dobry,\n\nprzesyłam porządek obrad sesji rady gminy na wtorek.\n\n"
    "Pozdrawiam\nAnna Nowak\n"
)
# No From, To, Date or Message-ID: rspamd's MISSING_* rules add up to a score
# between a plain message's and a reject.
BORDERLINE = b"Subject: zaproszenie\r\n\r\nZapraszamy na spotkanie w sprawie funduszy.\r\n"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def client(rspamd: RspamdFiles) -> RspamdClient:
    return RspamdClient(str(rspamd.socket), timeout=10)


def check(flt: SpamFilter, data: bytes, **changes: object) -> Verdict:
    async def go() -> Verdict:
        try:
            return await flt.check(info(data, **changes))
        finally:
            await flt.aclose()

    return run(go())


def score_of(rspamd: RspamdFiles, data: bytes) -> SpamResult:
    async def go() -> SpamResult:
        rc = client(rspamd)
        try:
            return await rc.check(info(data), hostname=CLIENT_HOST)
        finally:
            await rc.aclose()

    return run(go())


def headers_of(verdict: Verdict) -> dict[str, str]:
    return dict(verdict.headers)


def test_gtube_is_rejected(rspamd: RspamdFiles, filter_env: FilterEnv) -> None:
    flt = SpamFilter.from_settings(filter_env.settings())
    verdict = check(flt, plain_message(GTUBE))
    assert verdict.action is Action.REJECT
    assert verdict.reply == "550 5.7.1 Message refused as spam"
    assert verdict.labels == ("spam",)


def test_clean_mail_is_accepted_with_its_score(rspamd: RspamdFiles, filter_env: FilterEnv) -> None:
    settings = filter_env.settings()
    verdict = check(SpamFilter.from_settings(settings), CLEAN)
    assert verdict.action is Action.ACCEPT
    headers = headers_of(verdict)
    assert "X-Spam-Flag" not in headers
    score = float(headers["X-Spam-Score"])
    assert score < settings.spam.add_header_score
    assert headers["X-Spam-Status"] == f"No, score={score:.2f} required=6.00"
    assert verdict.labels == ()


def test_borderline_message_is_tagged_for_junk(rspamd: RspamdFiles) -> None:
    plain, borderline = score_of(rspamd, CLEAN).score, score_of(rspamd, BORDERLINE).score
    assert borderline >= plain + 2, (plain, borderline)  # rspamd really tells them apart
    # Thresholds around the measured scores: independent of rspamd's rule weights.
    add_header, reject = (plain + borderline) / 2, borderline + 3
    flt = SpamFilter(client(rspamd), add_header_score=add_header, reject_score=reject)

    verdict = check(flt, BORDERLINE, client_hostname=CLIENT_HOST)
    assert verdict.action is Action.ACCEPT
    assert verdict.labels == ("tagged",)
    assert verdict.headers[0] == ("X-Spam-Flag", "YES")  # what the Junk Sieve rule matches
    headers = headers_of(verdict)
    assert headers["X-Spam-Score"] == f"{borderline:.2f}"
    assert headers["X-Spam-Status"] == f"Yes, score={borderline:.2f} required={add_header:.2f}"
    assert "MISSING_FROM(" in headers["X-Spam-Symbols"]

    verdict = check(flt, CLEAN, client_hostname=CLIENT_HOST)
    assert verdict.action is Action.ACCEPT
    assert "X-Spam-Flag" not in headers_of(verdict)

    # The same message over the reject score is refused.
    strict = SpamFilter(client(rspamd), add_header_score=plain, reject_score=borderline - 0.5)
    assert (
        check(strict, BORDERLINE, client_hostname=CLIENT_HOST).reply
        == "550 5.7.1 Message refused as spam"
    )


def test_default_thresholds_with_the_rendered_rspamd(
    rspamd: RspamdFiles, filter_env: FilterEnv
) -> None:
    """rspamd 3.4's weights put the borderline message between the defaults 6 and 15."""
    borderline = score_of(rspamd, BORDERLINE)
    assert 6 <= borderline.score < 15, borderline
    assert borderline.action == "add header"  # rendered actions.conf agrees with [spam]
    verdict = check(SpamFilter.from_settings(filter_env.settings()), BORDERLINE)
    assert verdict.headers[0] == ("X-Spam-Flag", "YES")


def test_client_hostname_is_looked_up_and_passed(
    rspamd: RspamdFiles, filter_env: FilterEnv
) -> None:
    resolver = ReverseDns(filter_env.settings().dns)
    assert run(resolver.verified_name(CLIENT_IP)) == CLIENT_HOST
    assert run(resolver.verified_name(CLIENT_NO_RDNS)) is None
    assert run(resolver.verified_name("not an address")) is None

    flt = SpamFilter.from_settings(filter_env.settings())
    known = headers_of(check(flt, CLEAN))
    unknown = headers_of(check(flt, CLEAN, client_ip=CLIENT_NO_RDNS))
    assert "HFILTER_HOSTNAME_UNKNOWN" not in known.get("X-Spam-Symbols", "")
    assert "HFILTER_HOSTNAME_UNKNOWN" in unknown["X-Spam-Symbols"]
    assert float(unknown["X-Spam-Score"]) > float(known["X-Spam-Score"])
    # A name the SMTP server already verified is used as it is.
    given = headers_of(check(flt, CLEAN, client_ip=CLIENT_NO_RDNS, client_hostname=CLIENT_HOST))
    assert given["X-Spam-Score"] == known["X-Spam-Score"]


def test_utf8_envelope_and_authenticated_sender(rspamd: RspamdFiles, filter_env: FilterEnv) -> None:
    flt = SpamFilter.from_settings(filter_env.settings())
    verdict = check(
        flt,
        CLEAN,
        mail_from="ивана@xn--80a1acny.xn--90ae",
        recipients=["кмет@xn--80a1acny.xn--90ae", "sekretariat@info.association.pl"],
        recipient_domains=["xn--80a1acny.xn--90ae", "info.association.pl"],
        auth_user="ивана@xn--80a1acny.xn--90ae",
    )
    assert verdict.action is Action.ACCEPT
    assert check(flt, plain_message(GTUBE), auth_user="glusk@info.association.pl").reply == (
        "550 5.7.1 Message refused as spam"
    )


def test_concurrent_checks(rspamd: RspamdFiles, filter_env: FilterEnv) -> None:
    flt = SpamFilter.from_settings(filter_env.settings())
    messages = [plain_message(GTUBE) if i % 4 == 0 else CLEAN for i in range(24)]

    async def go() -> list[Verdict]:
        try:
            return await asyncio.gather(*(flt.check(info(m)) for m in messages))
        finally:
            await flt.aclose()

    verdicts = run(go())
    assert [i for i, v in enumerate(verdicts) if v.action is Action.REJECT] == list(range(0, 24, 4))
    assert all(v.action is Action.ACCEPT for i, v in enumerate(verdicts) if i % 4)


def test_rspamd_down(filter_env: FilterEnv) -> None:
    nowhere = str(filter_env.root / "no-rspamd.sock")
    verdict = check(SpamFilter(RspamdClient(nowhere, timeout=2)), plain_message(GTUBE))
    assert verdict.action is Action.ACCEPT  # the default: a spam filter outage does not stop mail
    assert verdict.headers == [("X-Spam-Status", "Unknown, spam filter unavailable")]
    assert verdict.labels == ("unavailable",)

    verdict = check(SpamFilter(RspamdClient(nowhere, timeout=2), on_error="tempfail"), CLEAN)
    assert verdict.reply == "451 4.7.1 Spam filter unavailable, try again later"

    settings = filter_env.settings(spam__address="127.0.0.1:9", spam__on_error="tempfail")
    assert check(SpamFilter.from_settings(settings), CLEAN).action is Action.TEMPFAIL
    assert run(RspamdClient(nowhere).ping()) is False


def test_large_message_is_not_checked(rspamd: RspamdFiles) -> None:
    flt = SpamFilter(client(rspamd), max_size=1000)
    verdict = check(flt, plain_message(GTUBE + b"\r\n" + b"x" * 2000))
    assert verdict.action is Action.ACCEPT
    assert verdict.headers == []
    assert verdict.labels == ("skipped",)


def test_ping(rspamd: RspamdFiles) -> None:
    async def go() -> bool:
        rc = client(rspamd)
        try:
            return await rc.ping()
        finally:
            await rc.aclose()

    assert run(go()) is True


def test_rendered_rspamd_configuration(rspamd: RspamdFiles, filter_env: FilterEnv) -> None:
    settings = filter_env.settings()
    actions = (rspamd.confdir / "local.d" / "actions.conf").read_text()
    assert "reject = 15.0;" in actions
    assert "add_header = 6.0;" in actions
    assert "greylist = null;" in actions
    options = (rspamd.confdir / "local.d" / "options.inc").read_text()
    assert f'nameserver = ["127.0.0.1:{settings.dns.port}"];' in options
    normal = (rspamd.confdir / "override.d" / "worker-normal.inc").read_text()
    assert f'bind_socket = "{rspamd.socket} mode=0660";' in normal
    assert "enabled = false;" in (rspamd.confdir / "override.d" / "worker-proxy.inc").read_text()


# -- deciding from rspamd's answer ------------------------------------------------------------


def decide(result: SpamResult) -> Verdict:
    flt = SpamFilter(RspamdClient("/nonexistent"), add_header_score=6, reject_score=15)
    return run(flt.decide(info(CLEAN), result))


def test_decide_follows_forced_actions_and_scores() -> None:
    assert decide(SpamResult(15.0, "reject", forced=True)).action is Action.REJECT
    assert decide(SpamResult(2.0, "reject", forced=True)).action is Action.REJECT
    assert decide(SpamResult(20.0, "no action", forced=False)).action is Action.REJECT
    # rspamd's own "reject" by score does not override our threshold (per-domain later).
    assert decide(SpamResult(14.0, "reject", forced=False)).labels == ("tagged",)
    forced = decide(SpamResult(0.0, "add header", forced=True))
    assert forced.headers[0] == ("X-Spam-Flag", "YES")
    soft = decide(SpamResult(0.0, "soft reject", forced=True, message="Ratelimit exceeded"))
    assert soft.reply == "451 4.7.1 Ratelimit exceeded"
    low = decide(SpamResult(-1.5, "no action", forced=False, symbols={"A": -1.5, "B": 0.0}))
    assert low.headers == [
        ("X-Spam-Score", "-1.50"),
        ("X-Spam-Status", "No, score=-1.50 required=6.00"),
        ("X-Spam-Symbols", "A(-1.50)"),
    ]


@pytest.mark.parametrize(
    "body",
    [[], {"action": "no action"}, {"score": "high", "action": "reject"}, {"score": 1.0}],
)
def test_parse_result_refuses_a_broken_answer(body: object) -> None:
    with pytest.raises(RspamdError):
        parse_result(body)


def test_parse_result() -> None:
    result = parse_result(
        {
            "is_skipped": True,
            "score": 15,
            "action": "reject",
            "symbols": {"GTUBE": {"name": "GTUBE", "score": 0.0}, "X": {"score": 1.5}},
            "messages": {"smtp_message": "Gtube pattern"},
        }
    )
    assert result == SpamResult(15.0, "reject", True, "Gtube pattern", {"GTUBE": 0.0, "X": 1.5})
