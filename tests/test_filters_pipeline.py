"""The filter pipeline: ordering, combination, headers, counters, settings, rendering.

The pipeline logic is tested with small filters written here; the pipeline that
`build_pipeline` makes from the settings runs against the real clamd and rspamd.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailhost.filter_daemons import Clamd, Rspamd, clamd_binary
from mailhost.filters import build_pipeline
from mailhost.filters.base import (
    FILTER_ERROR,
    Action,
    MessageInfo,
    Pipeline,
    PipelineResult,
    SocketAddress,
    Verdict,
    fold_header,
    strip_header_fields,
)
from mailhost.filters.clamav import ClamavFilter
from mailhost.filters.spam import SpamFilter
from provisioning.errors import ConfigError
from provisioning.render_filters import RspamdFiles, clamd_address, render_clamd, rspamd_address
from provisioning.settings import load_settings

from conftest import missing
from dovecot_server import require_root
from filter_daemons import (
    CLIENT_HOST,
    EICAR,
    EICAR_SIGNATURE,
    GTUBE,
    FilterEnv,
    RunningClamd,
    info,
    plain_message,
)

pytest_plugins = ["filter_daemons"]
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Fixed:
    """A filter that answers what it is told and records that it ran."""

    def __init__(self, name: str, verdict: Verdict, delay: float = 0) -> None:
        self.name = name
        self.verdict = verdict
        self.delay = delay
        self.calls: list[MessageInfo] = []

    async def check(self, message: MessageInfo) -> Verdict:
        self.calls.append(message)
        await asyncio.sleep(self.delay)
        return self.verdict


class Broken:
    name = "broken"

    async def check(self, message: MessageInfo) -> Verdict:
        raise RuntimeError("a bug")


ACCEPT_A = Verdict.accept([("X-A", "1")])
ACCEPT_B = Verdict.accept([("X-B", "2")], "tagged")
REJECT = Verdict.reject(554, "5.7.1", "Virus found: X", "viruses")
TEMPFAIL = Verdict.tempfail(451, "4.7.1", "Try later", "unavailable")
MESSAGE = info(plain_message("hello"))


def test_verdict_checks_its_codes_and_headers() -> None:
    assert REJECT.reply == "554 5.7.1 Virus found: X"
    assert Verdict.accept().reply == "250 2.0.0"
    with pytest.raises(ValueError, match="5xx"):
        Verdict(Action.REJECT, 451, "4.7.1", "no")
    with pytest.raises(ValueError, match=r"4\.x\.x"):
        Verdict(Action.TEMPFAIL, 451, "5.7.1", "no")
    with pytest.raises(ValueError, match="safe header"):
        Verdict.accept([("X-Evil", "a\r\nBcc: victim@example.org")])
    with pytest.raises(ValueError, match="safe header"):
        Verdict.accept([("X Bad", "a")])
    # Text from a daemon cannot break the SMTP reply.
    assert Verdict.reject(554, "5.7.1", "Virus found: a\r\n250 ok").reply == (
        "554 5.7.1 Virus found: a??250 ok"
    )


def test_pipeline_runs_in_order_and_the_first_refusal_wins() -> None:
    a, b = Fixed("a", ACCEPT_A), Fixed("b", REJECT)
    c = Fixed("c", TEMPFAIL)
    pipeline = Pipeline([a, b, c])
    result = run(pipeline.run(MESSAGE))
    assert result.action is Action.REJECT
    assert result.reply == "554 5.7.1 Virus found: X"
    assert result.decided_by == "b"
    assert result.headers == [("X-A", "1")]
    assert [name for name, _ in result.verdicts] == ["a", "b"]
    assert (len(a.calls), len(b.calls), len(c.calls)) == (1, 1, 0)  # c never ran
    assert pipeline.stats() == {
        "a": {"accepted": 1, "rejected": 0, "tempfail": 0, "errors": 0},
        "b": {"accepted": 0, "rejected": 1, "tempfail": 0, "errors": 0, "viruses": 1},
        "c": {"accepted": 0, "rejected": 0, "tempfail": 0, "errors": 0},
    }

    result = run(Pipeline([Fixed("t", TEMPFAIL), Fixed("r", REJECT)]).run(MESSAGE))
    assert (result.action, result.reply) == (Action.TEMPFAIL, "451 4.7.1 Try later")


def test_all_accept_accumulates_headers() -> None:
    pipeline = Pipeline([Fixed("a", ACCEPT_A), Fixed("b", ACCEPT_B)])
    result = run(pipeline.run(MESSAGE))
    assert result.accepted and result.reply is None and result.decided_by is None
    assert result.headers == [("X-A", "1"), ("X-B", "2")]
    assert pipeline.stats()["b"] == {
        "accepted": 1,
        "rejected": 0,
        "tempfail": 0,
        "errors": 0,
        "tagged": 1,
    }
    assert run(Pipeline([]).run(MESSAGE)).accepted


def test_concurrent_pipeline_gives_the_same_answer_sooner() -> None:
    slow = [Fixed("a", ACCEPT_A, 0.3), Fixed("b", TEMPFAIL, 0.3), Fixed("c", REJECT, 0.3)]
    pipeline = Pipeline(slow, concurrent=True)
    loop = asyncio.new_event_loop()
    try:
        started = loop.time()
        result = loop.run_until_complete(pipeline.run(MESSAGE))
        elapsed = loop.time() - started
    finally:
        loop.close()
    assert elapsed < 0.6  # 0.3 s each, all at once
    assert (result.action, result.decided_by) == (Action.TEMPFAIL, "b")  # order, not timing
    assert result.headers == [("X-A", "1")]
    assert all(len(f.calls) == 1 for f in slow)


class Slow:
    """A filter that takes long and records whether it was cancelled."""

    name = "slow"

    def __init__(self) -> None:
        self.cancelled = False

    async def check(self, message: MessageInfo) -> Verdict:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return ACCEPT_B


def test_concurrent_pipeline_waits_for_earlier_filters_and_cancels_later_ones() -> None:
    # The second filter refuses first, but the first one's later refusal decides,
    # as in order; the spam-like filter's verdict is not reported or counted.
    first, second = Fixed("av", REJECT, 0.2), Fixed("spam", Verdict.reject(550, "5.7.1", "Spam"))
    pipeline = Pipeline([first, second], concurrent=True)
    result = run(pipeline.run(MESSAGE))
    assert (result.reply, result.decided_by) == ("554 5.7.1 Virus found: X", "av")
    assert [name for name, _ in result.verdicts] == ["av"]
    assert len(second.calls) == 1  # it did run, at the same time
    assert pipeline.stats()["spam"] == {"accepted": 0, "rejected": 0, "tempfail": 0, "errors": 0}

    # A refusal from the first filter does not wait for a slow later one: cancelled.
    slow = Slow()
    pipeline = Pipeline([Fixed("av", TEMPFAIL), slow, Broken()], concurrent=True)
    started = time.monotonic()
    result = run(pipeline.run(MESSAGE))
    assert time.monotonic() - started < 5
    assert (result.reply, result.decided_by) == ("451 4.7.1 Try later", "av")
    assert slow.cancelled
    assert pipeline.stats()["slow"]["accepted"] == 0
    assert pipeline.stats()["broken"]["errors"] == 0  # its failure did not count either

    # All accept: every filter's headers, in the filters' order, not their finishing order.
    pipeline = Pipeline([Fixed("a", ACCEPT_A, 0.2), Fixed("b", ACCEPT_B)], concurrent=True)
    result = run(pipeline.run(MESSAGE))
    assert result.accepted and result.headers == [("X-A", "1"), ("X-B", "2")]
    assert [name for name, _ in result.verdicts] == ["a", "b"]
    assert pipeline.stats()["b"]["tagged"] == 1


def test_only_the_deciding_refusal_keeps_a_copy() -> None:
    # A faster later refusal (spam) must not quarantine a message an earlier filter
    # refuses (virus): refusals' side effects run only for the verdict that decides.
    kept: list[str] = []

    def keeping(name: str, verdict: Verdict) -> Verdict:
        async def keep() -> None:
            kept.append(name)

        return Verdict.reject(
            verdict.code, verdict.enhanced, verdict.text, *verdict.labels, keep=keep
        )

    spam = keeping("spam", Verdict.reject(550, "5.7.1", "Spam"))
    av = Fixed("av", keeping("av", REJECT), 0.2)
    pipeline = Pipeline([av, Fixed("spam", spam)], concurrent=True)
    result = run(pipeline.run(MESSAGE))
    assert result.decided_by == "av" and kept == ["av"]

    pipeline = Pipeline([Fixed("av", ACCEPT_A), Fixed("spam", spam)], concurrent=True)
    assert run(pipeline.run(MESSAGE)).reply == "550 5.7.1 Spam" and kept == ["av", "spam"]

    # A copy that cannot be kept (disk full) is a 451: the sender tries again later.
    async def full_disk() -> None:
        raise OSError(28, "No space left on device")

    broken = Verdict.reject(554, "5.7.1", "Virus found: X", keep=full_disk)
    pipeline = Pipeline([Fixed("av", broken)])
    result = run(pipeline.run(MESSAGE))
    assert result.reply == FILTER_ERROR.reply and result.decided_by == "av"
    assert pipeline.stats()["av"]["errors"] == 1


def test_a_failing_filter_is_a_tempfail_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = Pipeline([Fixed("a", ACCEPT_A), Broken()])
    result = run(pipeline.run(MESSAGE))
    assert result.reply == "451 4.3.0 Temporary content filter failure, try again later"
    assert result.decided_by == "broken"
    assert pipeline.stats()["broken"]["errors"] == 1
    assert "filter broken failed" in caplog.text
    concurrent = Pipeline([Fixed("a", ACCEPT_A), Broken()], concurrent=True)
    assert run(concurrent.run(MESSAGE)).reply == result.reply
    assert concurrent.stats()["broken"] == {
        "accepted": 0,
        "rejected": 0,
        "tempfail": 1,
        "errors": 1,
    }


def test_filter_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Pipeline([Fixed("a", ACCEPT_A), Fixed("a", ACCEPT_B)])


# -- headers -----------------------------------------------------------------------------------


def test_fold_header() -> None:
    assert fold_header("X-Spam-Score", "1.00") == b"X-Spam-Score: 1.00\r\n"
    words = " ".join(f"SYMBOL_NUMBER_{i}(1.00)" for i in range(10))
    folded = fold_header("X-Spam-Symbols", words)
    lines = folded.split(b"\r\n")[:-1]
    assert len(lines) > 1
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b"\t") for line in lines[1:])
    unfolded = folded.replace(b"\r\n\t", b" ").decode()
    assert unfolded == f"X-Spam-Symbols: {words}\r\n"
    assert fold_header("X", "a", b"\n") == b"X: a\n"


def test_strip_header_fields_only_touches_the_header_section() -> None:
    data = (
        b"Received: from a\r\n"
        b"X-Spam-Flag: NO\r\n"
        b"x-spam-score: -100\r\n"
        b"X-Spam-Status: No,\r\n"
        b"\tscore=-100\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"X-Spam-Flag: NO stays: it is body text\r\n"
    )
    stripped = strip_header_fields(data, ["X-Spam-Flag", "X-Spam-Score", "X-Spam-Status"])
    assert stripped == (
        b"Received: from a\r\nSubject: hi\r\n\r\nX-Spam-Flag: NO stays: it is body text\r\n"
    )
    assert strip_header_fields(b"Subject: x\r\n", ["subject"]) == b""
    assert strip_header_fields(b"A: 1\nB: 2\n\nbody\n", ["a"]) == b"B: 2\n\nbody\n"


def test_result_apply() -> None:
    result = PipelineResult(
        Action.ACCEPT,
        None,
        [("X-Spam-Flag", "YES"), ("X-Spam-Score", "7.00")],
        None,
        [],
        frozenset({"x-spam-flag", "x-spam-score"}),
    )
    data = b"X-Spam-Flag: NO\r\nSubject: s\r\n\r\nbody\r\n"
    assert (
        result.apply(data)
        == b"X-Spam-Flag: YES\r\nX-Spam-Score: 7.00\r\nSubject: s\r\n\r\nbody\r\n"
    )
    assert result.apply(b"Subject: s\n\nbody\n").startswith(b"X-Spam-Flag: YES\nX-Spam")


def test_socket_address() -> None:
    assert SocketAddress.parse("/run/clamd.sock") == SocketAddress(path="/run/clamd.sock")
    assert SocketAddress.parse("127.0.0.1:3310") == SocketAddress(host="127.0.0.1", port=3310)
    assert SocketAddress.parse("[::1]:11333") == SocketAddress(host="::1", port=11333)
    assert str(SocketAddress(host="::1", port=11333)) == "[::1]:11333"
    for bad in ("localhost", ":25", "host:0", "host:http"):
        with pytest.raises(ValueError, match="host:port"):
            SocketAddress.parse(bad)


# -- the configured pipeline against the real daemons ------------------------------------------

BORDERLINE = b"Subject: zaproszenie\r\n\r\nZapraszamy na spotkanie w sprawie funduszy.\r\n"


def test_configured_pipeline(
    clamd: RunningClamd, rspamd: RspamdFiles, filter_env: FilterEnv
) -> None:
    default = build_pipeline(filter_env.settings())
    assert [f.name for f in default.filters] == ["clamav", "sender-auth", "spam"]
    assert "authentication-results" in default.strip_headers
    run(default.aclose())
    settings = filter_env.settings(sender_auth__enabled="false")  # tested in test_sender_auth
    pipeline = build_pipeline(settings)
    assert [f.name for f in pipeline.filters] == ["clamav", "spam"]

    async def go(data: bytes, pipe: Pipeline = pipeline) -> PipelineResult:
        return await pipe.run(info(data, client_hostname=CLIENT_HOST))

    assert pipeline.concurrent  # what the engine builds: clamd and rspamd at once

    async def scenario() -> list[PipelineResult]:
        sequential = build_pipeline(settings, concurrent=False)
        try:
            both = plain_message(EICAR + b"\r\n" + GTUBE + b"\r\n")
            return [
                await go(both, sequential),
                await go(both),
                await go(plain_message(GTUBE)),
                await go(b"X-Spam-Flag: NO\r\nX-Muninet-Antivirus: clean\r\n" + BORDERLINE),
            ]
        finally:
            await pipeline.aclose()
            await sequential.aclose()

    virus_seq, virus_conc, spam, borderline = run(scenario())

    # Virus and spam at once: the antivirus answers. In order rspamd is not even
    # asked; at once its verdict (a refusal too) neither decides nor counts.
    assert virus_seq.reply == f"554 5.7.1 Virus found: {EICAR_SIGNATURE}"
    assert virus_seq.decided_by == "clamav"
    assert [name for name, _ in virus_seq.verdicts] == ["clamav"]
    assert virus_conc.reply == virus_seq.reply
    assert virus_conc.decided_by == "clamav"
    assert [name for name, _ in virus_conc.verdicts] == ["clamav"]

    assert spam.reply == "550 5.7.1 Message refused as spam"
    assert spam.decided_by == "spam"
    assert spam.headers == [("X-Muninet-Antivirus", "clean (ClamAV)")]

    assert borderline.accepted
    stored = borderline.apply(
        b"X-Spam-Flag: NO\r\nX-Muninet-Antivirus: clean\r\n" + BORDERLINE
    ).decode()
    head, _, body = stored.partition("\r\n\r\n")
    assert head.startswith("X-Muninet-Antivirus: clean (ClamAV)\r\nX-Spam-Flag: YES\r\n")
    assert head.count("X-Spam-Flag") == 1  # the forged "NO" is gone
    assert head.count("X-Muninet-Antivirus") == 1
    assert "\r\nSubject: zaproszenie" in head
    assert body == "Zapraszamy na spotkanie w sprawie funduszy.\r\n"

    stats = pipeline.stats()
    assert stats["clamav"] == {
        "accepted": 2,
        "rejected": 1,
        "tempfail": 0,
        "errors": 0,
        "viruses": 1,
    }
    assert stats["spam"] == {
        "accepted": 1,
        "rejected": 1,
        "tempfail": 0,
        "errors": 0,
        "spam": 1,
        "tagged": 1,
    }


def test_configured_pipeline_with_clamd_down_and_filters_disabled(
    filter_env: FilterEnv,
) -> None:
    down = filter_env.settings(antivirus__address=str(filter_env.root / "nothing.sock"))
    pipeline = build_pipeline(down)
    result = run(pipeline.run(info(plain_message("hello"))))
    assert (result.reply, result.decided_by) == (
        "451 4.7.1 Virus scanner unavailable, try again later",
        "clamav",
    )
    only_spam = build_pipeline(
        filter_env.settings(antivirus__enabled="false", sender_auth__enabled="false")
    )
    assert [f.name for f in only_spam.filters] == ["spam"]
    assert "x-muninet-antivirus" not in only_spam.strip_headers
    none = build_pipeline(
        filter_env.settings(
            antivirus__enabled="false", spam__enabled="false", sender_auth__enabled="false"
        )
    )
    assert none.filters == []
    assert run(none.run(info(plain_message("hello")))).accepted


# -- settings and rendering --------------------------------------------------------------------


def test_filter_settings_defaults_and_overrides() -> None:
    settings = load_settings({})
    av, spam = settings.antivirus, settings.spam
    assert (av.enabled, av.address, av.database_dir) == (True, "", "/var/lib/clamav")
    assert (av.on_error, av.on_oversize, av.timeout) == ("tempfail", "skip", 60)
    assert av.max_stream_size == 50 * 1024**2
    assert (spam.enabled, spam.on_error) == (True, "accept")
    assert (spam.add_header_score, spam.reject_score) == (6.0, 15.0)
    assert clamd_address(settings) == str(settings.state_dir / "clamav" / "run" / "clamd.sock")
    assert rspamd_address(settings) == str(settings.state_dir / "rspamd" / "run" / "normal.sock")
    changed = load_settings(
        {
            "MUNINET_ANTIVIRUS__ADDRESS": "127.0.0.1:3310",
            "MUNINET_SPAM__REJECT_SCORE": "20",
            "MUNINET_ANTIVIRUS__MAX_STREAM_SIZE": "25M",
        }
    )
    assert clamd_address(changed) == "127.0.0.1:3310"
    assert changed.spam.reject_score == 20.0
    assert changed.antivirus.max_stream_size == 25 * 1024**2
    assert ClamavFilter.from_settings(changed).max_stream_size == 25 * 1024**2
    assert SpamFilter.from_settings(changed).reject_score == 20.0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MUNINET_SPAM__ADD_HEADER_SCORE": "20"}, "add_header_score must not be above"),
        ({"MUNINET_ANTIVIRUS__ON_ERROR": "ignore"}, "antivirus.on_error"),
        ({"MUNINET_ANTIVIRUS__ON_OVERSIZE": "accept"}, "antivirus.on_oversize"),
        ({"MUNINET_ANTIVIRUS__TIMEOUT": "0s"}, "antivirus.timeout"),
        ({"MUNINET_SPAM__MAX_SIZE": "lots"}, "spam.max_size"),
        ({"MUNINET_SPAM__QUARANTIN": "true"}, "unknown setting 'quarantin'"),
    ],
)
def test_bad_filter_settings_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info_:
        load_settings(environ)
    assert message in str(info_.value)


def test_daemons_refuse_to_start_when_they_cannot(filter_env: FilterEnv, tmp_path: Path) -> None:
    if clamd_binary() is None:
        missing("clamd (clamav-daemon)")
    external = filter_env.settings(antivirus__address="127.0.0.1:3310")
    with pytest.raises(ConfigError, match="starts none"):
        Clamd(external).start()
    with pytest.raises(ConfigError, match="starts none"):
        Rspamd(filter_env.settings(spam__address="127.0.0.1:11333")).start()

    empty = filter_env.root / "empty-db"
    empty.mkdir()
    empty.chmod(0o755)
    no_signatures = filter_env.settings(
        paths__state_dir=str(filter_env.root / "state-empty"), antivirus__database_dir=str(empty)
    )
    with pytest.raises(ConfigError, match=r"no signatures in .*run freshclam"):
        Clamd(no_signatures).start()


def test_state_dir_the_daemon_user_cannot_reach_is_refused(
    filter_env: FilterEnv, tmp_path: Path
) -> None:
    require_root()  # only root starts clamd as the clamav user
    private = tmp_path / "private"  # pytest's tmp dirs are 0700, owned by root
    private.mkdir(mode=0o700)
    settings = filter_env.settings(paths__state_dir=str(private / "state"))
    with pytest.raises(ConfigError, match="'clamav' cannot reach"):
        render_clamd(settings)
