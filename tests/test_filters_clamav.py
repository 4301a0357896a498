"""The antivirus filter against a real clamd (rendered by muninet, tiny test database)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailhost.filters.base import Action, Verdict
from mailhost.filters.clamav import (
    ClamavFilter,
    ClamdClient,
    ClamdError,
    ClamdUnavailable,
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
    os.kill(daemon.process.pid, signal.SIGSTOP)  # alive, socket open, never answers
    try:
        flt = make_filter(str(daemon.files.socket), timeout=0.5)
        started = time.monotonic()
        verdict = scan(flt, CLEAN)
        assert time.monotonic() - started < 3
        assert verdict.reply == "451 4.7.1 Virus scanner unavailable, try again later"
    finally:
        os.kill(daemon.process.pid, signal.SIGCONT)
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
    run(flt.check(info(CLEAN)))
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
