"""The antivirus filter against a real clamd (rendered by muninet, tiny test database)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailhost.filters.base import Action, Pipeline, Verdict
from mailhost.filters.clamav import (
    ClamavFilter,
    ClamdClient,
    ClamdError,
    ClamdUnavailable,
    ScanResult,
    StreamTooLarge,
    parse_reply,
)
from mailhost.filters.quarantine import Quarantine

from filter_daemons import (
    CLAM_EXE_SIGNATURE,
    CLAM_ZIP,
    CLAMD_STREAM_MAX,
    EICAR,
    EICAR_SIGNATURE,
    FilterEnv,
    RunningClamd,
    attachment_message,
    free_port,
    info,
    plain_message,
    start_clamd,
    zipped,
)

pytest_plugins = ["filter_daemons"]
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def scan(flt: ClamavFilter, data: bytes) -> Verdict:
    return run(flt.check(info(data)))


def make_filter(address: str, **options: Any) -> ClamavFilter:
    timeout = options.pop("timeout", 10)
    return ClamavFilter(ClamdClient(address, timeout=timeout), **options)


CLEAN = plain_message("Dzień dobry, w załączeniu porządek obrad sesji rady gminy.\n")


@pytest.mark.parametrize(
    ("label", "data", "signature"),
    [
        ("plain", plain_message(EICAR + b"\r\n"), EICAR_SIGNATURE),
        ("base64 attachment", attachment_message("eicar.com", EICAR), EICAR_SIGNATURE),
        (
            "zipped attachment",
            attachment_message("eicar.zip", zipped("eicar.com", EICAR), "application/zip"),
            EICAR_SIGNATURE,
        ),
        ("raw zip", zipped("eicar.com", EICAR), EICAR_SIGNATURE),
        ("clam.zip (hdb)", b"", CLAM_EXE_SIGNATURE),
    ],
)
def test_virus_is_rejected_with_its_name(
    clamd: RunningClamd, label: str, data: bytes, signature: str
) -> None:
    if not data:
        data = attachment_message("clam.zip", CLAM_ZIP.read_bytes(), "application/zip")
    verdict = scan(make_filter(clamd.socket), data)
    assert verdict.action is Action.REJECT, label
    assert verdict.reply == f"554 5.7.1 Virus found: {signature}"
    assert verdict.labels == ("viruses",)


def test_clean_mail_is_accepted_with_a_header(clamd: RunningClamd) -> None:
    verdict = scan(make_filter(clamd.socket), CLEAN)
    assert verdict.action is Action.ACCEPT
    assert verdict.headers == [("X-Muninet-Antivirus", "clean (ClamAV)")]
    # One byte off the signature is clean too.
    almost = EICAR.replace(b"EICAR", b"EICAQ")
    assert scan(make_filter(clamd.socket), plain_message(almost)).action is Action.ACCEPT


def test_tcp_address_and_client_commands(clamd: RunningClamd) -> None:
    client = ClamdClient(clamd.tcp_address, timeout=5)
    assert run(client.ping()) is True
    assert run(client.version()).startswith("ClamAV ")
    assert run(client.instream(CLEAN)).virus is None
    assert run(client.instream(plain_message(EICAR))).virus == EICAR_SIGNATURE
    verdict = scan(make_filter(clamd.tcp_address), attachment_message("e.com", EICAR))
    assert verdict.reply == f"554 5.7.1 Virus found: {EICAR_SIGNATURE}"


def test_concurrent_scans_do_not_block_each_other(clamd: RunningClamd) -> None:
    flt = make_filter(clamd.socket, max_parallel=4)
    messages = [plain_message(EICAR) if i % 3 == 0 else CLEAN for i in range(30)]

    async def scan_all() -> list[Verdict]:
        return await asyncio.gather(*(flt.check(info(m)) for m in messages))

    verdicts = run(scan_all())
    rejected = [i for i, v in enumerate(verdicts) if v.action is Action.REJECT]
    assert rejected == list(range(0, 30, 3))
    assert all(v.action is Action.ACCEPT for i, v in enumerate(verdicts) if i % 3)


def test_stopped_clamd_tempfails_and_fail_open_adds_a_header(filter_env: FilterEnv) -> None:
    settings = filter_env.settings(paths__state_dir=str(filter_env.root / "state-stopped"))
    daemon = start_clamd(settings)
    assert daemon.files is not None
    socket_path = str(daemon.files.socket)
    assert scan(make_filter(socket_path), CLEAN).action is Action.ACCEPT
    daemon.stop()

    verdict = scan(make_filter(socket_path), CLEAN)
    assert verdict.action is Action.TEMPFAIL
    assert verdict.reply == "451 4.7.1 Virus scanner unavailable, try again later"
    assert verdict.labels == ("unavailable",)

    verdict = scan(make_filter(socket_path, on_error="accept"), plain_message(EICAR))
    assert verdict.action is Action.ACCEPT
    assert verdict.headers == [("X-Muninet-Antivirus", "unavailable, not scanned")]

    # Nothing at all on a TCP port: the same.
    port = free_port()
    assert scan(make_filter(f"127.0.0.1:{port}"), CLEAN).action is Action.TEMPFAIL


def test_clamd_that_does_not_answer_times_out(filter_env: FilterEnv) -> None:
    settings = filter_env.settings(paths__state_dir=str(filter_env.root / "state-frozen"))
    daemon = start_clamd(settings)
    assert daemon.files is not None and daemon.process is not None
    fresh = make_filter(str(daemon.files.socket), timeout=0.5)
    pooled = make_filter(str(daemon.files.socket), timeout=0.5)
    assert scan(pooled, CLEAN).action is Action.ACCEPT  # a session waits in its pool
    os.kill(daemon.process.pid, signal.SIGSTOP)  # alive, socket open, never answers
    try:
        for flt in (fresh, pooled):
            started = time.monotonic()
            verdict = scan(flt, CLEAN)
            assert time.monotonic() - started < 3
            assert verdict.reply == "451 4.7.1 Virus scanner unavailable, try again later"
        # One timeout in all: the pooled session's scan was not sent again on a new
        # connection (it would wait as long again), and that session is gone.
        assert (fresh.client.connections, pooled.client.connections) == (1, 1)
        assert pooled.client.idle_sessions == 0
    finally:
        os.kill(daemon.process.pid, signal.SIGCONT)
    try:
        assert scan(pooled, plain_message(EICAR)).action is Action.REJECT
    finally:
        daemon.stop()


def test_message_over_the_local_limit_is_not_sent(clamd: RunningClamd) -> None:
    big = plain_message(EICAR + b"\r\n" + b"x" * 100 + b"\r\n" * (CLAMD_STREAM_MAX // 2))
    assert len(big) > CLAMD_STREAM_MAX
    verdict = scan(make_filter(clamd.socket, max_stream_size=CLAMD_STREAM_MAX), big)
    assert verdict.action is Action.ACCEPT
    assert verdict.headers == [
        ("X-Muninet-Antivirus", f"not scanned, larger than {CLAMD_STREAM_MAX} bytes")
    ]
    assert verdict.labels == ("oversize",)


@pytest.mark.parametrize(
    ("on_oversize", "action", "reply"),
    [
        ("skip", Action.ACCEPT, None),
        (
            "tempfail",
            Action.TEMPFAIL,
            "451 4.3.4 Message too big for the virus scanner, try again later",
        ),
        ("reject", Action.REJECT, "552 5.3.4 Message too big for the virus scanner"),
    ],
)
def test_clamd_cutting_off_a_long_stream_is_handled(
    clamd: RunningClamd, on_oversize: str, action: Action, reply: str | None
) -> None:
    # The filter believes clamd takes 8 MB, clamd's StreamMaxLength is 1 MB: clamd
    # answers "INSTREAM size limit exceeded" and closes the connection mid-stream.
    big = plain_message(b"0123456789abcdef\r\n" * (3 * CLAMD_STREAM_MAX // 18))
    assert len(big) > 2 * CLAMD_STREAM_MAX
    client = ClamdClient(clamd.socket, timeout=10)
    with pytest.raises(StreamTooLarge):
        run(client.instream(big))
    flt = make_filter(clamd.socket, max_stream_size=8 * CLAMD_STREAM_MAX, on_oversize=on_oversize)
    verdict = scan(flt, big)
    assert verdict.action is action
    assert verdict.labels == ("oversize",)
    if reply is None:
        assert verdict.headers == [
            ("X-Muninet-Antivirus", "not scanned, larger than the scanner's limit")
        ]
    else:
        assert verdict.reply == reply
    # clamd is fine afterwards.
    assert scan(make_filter(clamd.socket), plain_message(EICAR)).action is Action.REJECT


def test_quarantine_keeps_the_rejected_message(clamd: RunningClamd, tmp_path: Path) -> None:
    directory = tmp_path / "quarantine" / "virus"
    flt = make_filter(clamd.socket, quarantine=Quarantine(directory))
    data = attachment_message("eicar.com", EICAR)
    message = info(data, recipients=["a@info.association.pl", "b@info.association.pl"])
    verdict = run(flt.check(message))
    assert verdict.action is Action.REJECT
    assert not directory.exists()  # the pipeline keeps the copy, once the verdict decides
    assert run(Pipeline([flt]).run(message)).decided_by == "clamav"
    emls = list(directory.glob("*.eml"))
    assert len(emls) == 1
    assert emls[0].read_bytes() == data
    assert stat.S_IMODE(emls[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    meta = json.loads(emls[0].with_suffix(".json").read_text())
    assert meta["reason"] == "virus"
    assert meta["detail"] == EICAR_SIGNATURE
    assert meta["recipients"] == ["a@info.association.pl", "b@info.association.pl"]
    assert meta["client_ip"] == "203.0.113.25"
    # A clean message is not kept.
    run(Pipeline([flt]).run(info(CLEAN)))
    assert len(list(directory.glob("*.eml"))) == 1


def test_from_settings_uses_the_rendered_socket(clamd: RunningClamd, filter_env: FilterEnv) -> None:
    flt = ClamavFilter.from_settings(filter_env.settings(antivirus__quarantine="true"))
    assert str(flt.client.address) == clamd.socket
    assert flt.max_stream_size == CLAMD_STREAM_MAX
    assert flt.quarantine is not None
    assert flt.quarantine.directory == filter_env.settings().state_dir / "quarantine" / "virus"
    assert scan(flt, plain_message(EICAR)).action is Action.REJECT


def test_rendered_clamd_conf(clamd: RunningClamd) -> None:
    text = clamd.files.config.read_text()
    assert f"LocalSocket {clamd.files.socket}\n" in text
    assert f"StreamMaxLength {CLAMD_STREAM_MAX}\n" in text
    assert f"DatabaseDirectory {clamd.files.database_dir}\n" in text
    assert "Foreground yes\n" in text
    assert ("User clamav\n" in text) is (os.geteuid() == 0)


@pytest.mark.parametrize(
    ("reply", "virus"),
    [
        ("stream: OK", None),
        ("stream: Win.Test.EICAR_HDB-1 FOUND", "Win.Test.EICAR_HDB-1"),
        ("stream: Eicar-Signature FOUND\0", "Eicar-Signature"),
    ],
)
def test_parse_reply(reply: str, virus: str | None) -> None:
    assert parse_reply(reply).virus == virus


def test_parse_reply_errors() -> None:
    with pytest.raises(StreamTooLarge):
        parse_reply("INSTREAM size limit exceeded. ERROR")
    with pytest.raises(ClamdError) as info_:
        parse_reply("Can't allocate memory ERROR")
    assert not isinstance(info_.value, (StreamTooLarge, ClamdUnavailable))


# -- clamd sessions: one connection for many scans -----------------------------------------


def test_scans_reuse_one_clamd_session(clamd: RunningClamd) -> None:
    client = ClamdClient(clamd.socket, timeout=10)
    messages = [plain_message(EICAR) if i % 5 == 0 else CLEAN for i in range(50)]

    async def scan_all() -> list[ScanResult]:
        return [await client.instream(m) for m in messages]

    results = run(scan_all())
    assert [r.virus for r in results] == [
        EICAR_SIGNATURE if i % 5 == 0 else None for i in range(50)
    ]
    # clamd numbers the requests of a session 1, 2, ...: all 50 went over one connection,
    # as far as clamd is concerned, and the client opened just that one.
    assert [r.request for r in results] == list(range(1, 51))
    assert (client.connections, client.idle_sessions) == (1, 1)
    # Still the same session from another event loop (each SMTP worker has one loop;
    # the tests start several).
    assert run(client.instream(plain_message(EICAR))) == ScanResult(EICAR_SIGNATURE, 51)
    run(client.aclose())
    assert client.idle_sessions == 0

    # Without sessions: a connection per scan, as before.
    single = ClamdClient(clamd.socket, timeout=10, sessions=0)
    for data in (CLEAN, plain_message(EICAR)):
        run(single.instream(data))
    assert single.connections == 2
    assert run(single.instream(CLEAN)) == ScanResult(None)  # no request number


def test_virus_found_over_a_reused_session_through_the_filter(clamd: RunningClamd) -> None:
    flt = make_filter(clamd.socket)

    async def scan_three() -> list[Verdict]:
        return [await flt.check(info(data)) for data in (CLEAN, CLEAN, plain_message(EICAR))]

    clean, _, virus = run(scan_three())
    assert clean.action is Action.ACCEPT
    assert virus.reply == f"554 5.7.1 Virus found: {EICAR_SIGNATURE}"
    assert flt.client.connections == 1


def test_concurrent_scans_share_a_bounded_pool(clamd: RunningClamd) -> None:
    flt = make_filter(clamd.socket, max_parallel=4)
    flt.client.sessions = 4
    messages = [plain_message(EICAR) if i % 3 == 0 else CLEAN for i in range(40)]

    async def bursts() -> list[list[Verdict]]:  # one loop: the filter's semaphore is bound to it
        return [await asyncio.gather(*(flt.check(info(m)) for m in messages)) for _ in range(3)]

    for verdicts in run(bursts()):
        assert [v.action is Action.REJECT for v in verdicts] == [i % 3 == 0 for i in range(40)]
    # At most 4 scans at once, so at most 4 sessions were ever opened, and kept.
    assert 1 <= flt.client.connections <= 4
    assert flt.client.idle_sessions == flt.client.connections


def test_clamd_restarted_between_scans(filter_env: FilterEnv) -> None:
    settings = filter_env.settings(paths__state_dir=str(filter_env.root / "state-restart"))
    daemon = start_clamd(settings)
    assert daemon.files is not None
    client = ClamdClient(str(daemon.files.socket), timeout=10)
    flt = ClamavFilter(client)
    try:
        assert run(client.instream(CLEAN)) == ScanResult(None, 1)
        assert client.idle_sessions == 1
        daemon.stop()
        # clamd gone: never clean, the filter answers 451.
        verdict = run(flt.check(info(CLEAN)))
        assert verdict.reply == "451 4.7.1 Virus scanner unavailable, try again later"
        assert client.idle_sessions == 0
        daemon = start_clamd(settings)
        # Back: a new session, and EICAR is still found.
        assert run(client.instream(plain_message(EICAR))) == ScanResult(EICAR_SIGNATURE, 1)
        assert run(client.instream(CLEAN)) == ScanResult(None, 2)
        assert client.connections == 2

        # Restarted again while the session is idle: the next scan still gets clamd's
        # real answer, on a new connection.
        daemon.stop()
        daemon = start_clamd(settings)
        assert run(client.instream(plain_message(EICAR))) == ScanResult(EICAR_SIGNATURE, 1)
        assert client.connections == 3
    finally:
        daemon.stop()


def test_oversized_stream_over_a_session_and_the_pool_recovers(clamd: RunningClamd) -> None:
    big = plain_message(b"0123456789abcdef\r\n" * (3 * CLAMD_STREAM_MAX // 18))
    client = ClamdClient(clamd.socket, timeout=10)

    async def scenario() -> list[ScanResult | str]:
        out: list[ScanResult | str] = [await client.instream(CLEAN)]
        try:
            await client.instream(big)  # over the pooled session: clamd cuts it off
        except StreamTooLarge as exc:
            out.append(f"too large: {exc}")
        out.append(await client.instream(plain_message(EICAR)))
        out.append(await client.instream(CLEAN))
        return out

    first, cut, virus, clean = run(scenario())
    assert first == ScanResult(None, 1)
    assert isinstance(cut, str) and "2: INSTREAM size limit exceeded" in cut
    # clamd closed that session; the next scans use a new one, not sent twice.
    assert (virus, clean) == (ScanResult(EICAR_SIGNATURE, 1), ScanResult(None, 2))
    assert (client.connections, client.idle_sessions) == (2, 1)


def test_idle_sessions_expire(clamd: RunningClamd) -> None:
    client = ClamdClient(clamd.socket, timeout=10, idle_timeout=0.2)

    async def scenario() -> list[ScanResult]:
        first = await client.instream(CLEAN)
        second = await client.instream(CLEAN)
        await asyncio.sleep(0.3)
        return [first, second, await client.instream(CLEAN)]

    assert [r.request for r in run(scenario())] == [1, 2, 1]
    assert client.connections == 2


def test_pipeline_close_closes_the_sessions(clamd: RunningClamd) -> None:
    flt = make_filter(clamd.socket)
    pipeline = Pipeline([flt])
    assert run(pipeline.run(info(CLEAN))).accepted
    assert flt.client.idle_sessions == 1
    run(pipeline.aclose())
    assert flt.client.idle_sessions == 0


# A clamd that misbehaves on purpose: `answer(connection, request, data)` gives the
# bytes to send back, or None to close the connection without an answer.
Answer = Callable[[int, int, bytes], bytes | None]


@contextlib.asynccontextmanager
async def fake_clamd(
    path: Path, answer: Answer, read_timeout: float | None = None
) -> AsyncIterator[list[int]]:
    """Speaks clamd's session protocol. An answer without a NUL terminator is followed
    by closing the connection; with `read_timeout`, a session idle that long is
    dropped as clamd drops it after its ReadTimeout."""
    requests: list[int] = []  # requests seen per connection
    handlers: list[tuple[asyncio.Task[Any], asyncio.StreamWriter]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = len(requests)
        requests.append(0)
        task = asyncio.current_task()
        assert task is not None
        handlers.append((task, writer))
        try:
            while True:
                try:
                    async with asyncio.timeout(read_timeout):
                        command = (await reader.readuntil(b"\0")).rstrip(b"\0")
                except TimeoutError:
                    writer.write(b"COMMAND READ TIMED OUT\n")
                    break
                if command == b"zIDSESSION":
                    continue
                assert command == b"zINSTREAM", command
                data = b""
                while size := struct.unpack(">I", await reader.readexactly(4))[0]:
                    data += await reader.readexactly(size)
                requests[connection] += 1
                reply = answer(connection, requests[connection], data)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if not reply.endswith(b"\0"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(serve, path=str(path))
    try:
        yield requests
    finally:
        server.close()
        for task, writer in handlers:  # sessions the client still holds: end them
            writer.transport.abort()
            await asyncio.wait([task])
        await server.wait_closed()


def honest(connection: int, request: int, data: bytes) -> bytes:
    verdict = "Fake.Virus FOUND" if b"VIRUS" in data else "OK"
    return f"{request}: stream: {verdict}\0".encode()


def test_a_session_broken_in_use_is_retried_once_on_a_new_connection(tmp_path: Path) -> None:
    def closes_after_one(connection: int, request: int, data: bytes) -> bytes | None:
        return honest(connection, request, data) if request == 1 else None

    async def scenario() -> tuple[list[ScanResult], list[int], int]:
        client = ClamdClient(str(tmp_path / "c.sock"), timeout=5)
        async with fake_clamd(tmp_path / "c.sock", closes_after_one) as requests:
            results = [await client.instream(b"clean"), await client.instream(b"a VIRUS")]
            results.append(await client.instream(b"clean again"))
        return results, requests, client.connections

    results, requests, connections = run(scenario())
    # The second scan's session died under it; sent again, it got a real answer.
    assert results == [ScanResult(None, 1), ScanResult("Fake.Virus", 1), ScanResult(None, 1)]
    assert requests == [2, 2, 1] and connections == 3


@pytest.mark.parametrize(
    "reply",
    [
        b"7: stream: OK\0",  # the answer to another request
        b"stream: OK\0",  # no request number inside a session
        b"1: stream: OK\0trailing",  # more than one answer
        b"COMMAND READ TIMED OUT\n",  # what clamd says before dropping an idle session
        b"1: stream: OK",  # no terminator before the connection closed
    ],
)
def test_a_garbled_answer_is_never_clean(tmp_path: Path, reply: bytes) -> None:
    calls: list[int] = []

    def garbled(connection: int, request: int, data: bytes) -> bytes | None:
        calls.append(connection)
        # The first session works, then every answer is garbled, on any connection.
        return honest(connection, request, data) if connection == 0 and request == 1 else reply

    async def scenario() -> tuple[list[Verdict], ClamavFilter]:
        flt = make_filter(str(tmp_path / "c.sock"), timeout=5)
        async with fake_clamd(tmp_path / "c.sock", garbled):
            return [await flt.check(info(CLEAN)) for _ in range(3)], flt

    (first, second, third), flt = run(scenario())
    assert first.action is Action.ACCEPT
    unavailable = "451 4.7.1 Virus scanner unavailable, try again later"
    assert second.reply == third.reply == unavailable
    # Garbled on the reused session, then on a new connection: tried twice. The third
    # scan had no session to reuse: one try on a new connection.
    assert calls == [0, 0, 1, 2]
    assert flt.client.idle_sessions == 0


def test_a_session_clamd_dropped_while_idle_is_not_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailhost.filters.clamav")

    async def scenario() -> tuple[list[ScanResult], list[int]]:
        client = ClamdClient(str(tmp_path / "c.sock"), timeout=5)
        async with fake_clamd(tmp_path / "c.sock", honest, read_timeout=0.1) as requests:
            first = await client.instream(b"clean")
            await asyncio.sleep(0.3)  # the fake clamd says COMMAND READ TIMED OUT, closes
            return [first, await client.instream(b"VIRUS")], requests

    results, requests = run(scenario())
    assert results == [ScanResult(None, 1), ScanResult("Fake.Virus", 1)]
    # Seen closed before it was used: nothing was sent to it, nothing retried.
    assert requests == [1, 1]
    assert "scanning on a new connection" not in caplog.text
