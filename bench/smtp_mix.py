#!/usr/bin/env python3
"""A timed SMTP load client with a fixed message mix, for the benchmark's filter scenario.

`python3 bench/smtp_mix.py --port P --messages N --sessions S [--first K]` sends
messages K .. K+N-1 of the mix over S concurrent sessions (asyncio, standard library
only), one connection per message as smtp-source does, and prints one JSON object:
`{"results": [[kind, code, seconds], ...], "errors": [...], "began": t0, "ended": t1}`
(t0, t1: time.monotonic() around the sending). `seconds` runs from
before the TCP connect to the reply after DATA (QUIT is not timed; a session waits
for the server to close before it connects again). smtp_throughput.py
starts several of these processes at once so that the client is not held to one CPU.

The mix (message n has kind MIX[n % 20], the same in every run):

- text (16 of 20): a 5 KB plain-text letter with the usual header fields;
- attachment (3 of 20): a short text part and a 30 KB CSV file as a base64 attachment;
- eicar (1 of 20): a short text part and the EICAR test string as an attachment
  `test.com` (base64). With the antivirus on it is refused with `554`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
import time
from email.utils import formatdate

LOOPBACK = "127.0.0.1"
SENDER = "anna.nowak@gmina-przyklad.pl"
RECIPIENT = "user@bench.example"
CLIENT_NAME = b"client.bench.invalid"
MIX = (
    "eicar",
    *("text",) * 5,
    "attachment",
    *("text",) * 5,
    "attachment",
    *("text",) * 6,
    "attachment",
)
# Joined at run time, so the whole EICAR string never appears in the source tree.
EICAR = b"".join((b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$", b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"))
PLACEHOLDER = b"@@N@@"


def _headers(subject: str, extra: str = "") -> str:
    return (
        f"From: Anna Nowak <{SENDER}>\r\n"
        f"To: <{RECIPIENT}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {formatdate(localtime=True)}\r\n"
        f"Message-ID: <{PLACEHOLDER.decode()}.bench@gmina-przyklad.pl>\r\n"
        "MIME-Version: 1.0\r\n"
        f"{extra}"
    )


LETTER = (
    "Dear colleagues,\r\n\r\n"
    "please find below the agenda of the council meeting on Tuesday and the points we\r\n"
    "still need to agree on before the budget is presented to the regional office.\r\n\r\n"
)
LINE = "Item {n}: road maintenance in the northern villages, school transport and the library.\r\n"


def text_message() -> bytes:
    body = LETTER + "".join(LINE.format(n=n) for n in range(1, 56))
    body += "\r\nKind regards,\r\nAnna Nowak\r\nSecretary of the municipality\r\n"
    head = _headers("Council meeting on Tuesday", 'Content-Type: text/plain; charset="utf-8"\r\n')
    return (head + "\r\n" + body).encode()


def _multipart(subject: str, filename: str, mime: str, content: bytes) -> bytes:
    head = _headers(subject, 'Content-Type: multipart/mixed; boundary="=_b"\r\n')
    encoded = base64.encodebytes(content).decode().replace("\n", "\r\n")
    body = (
        '--=_b\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\n'
        "Please find the file attached.\r\n\r\nAnna Nowak\r\n"
        f'--=_b\r\nContent-Type: {mime}; name="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="{filename}"\r\n\r\n'
        f"{encoded}--=_b--\r\n"
    )
    return (head + "\r\n" + body).encode()


def attachment_message() -> bytes:
    rows = ["municipality,village,item,amount_pln"]
    rows += [f"Gmina,Village {n % 40},road repair {n},{1000 + 37 * n}" for n in range(800)]
    return _multipart("Budget table", "budget.csv", "text/csv", "\r\n".join(rows).encode())


def eicar_message() -> bytes:
    return _multipart("Test file", "test.com", "application/octet-stream", EICAR)


def as_data(message: bytes) -> bytes:
    """DATA as sent: dot-stuffed, with the terminating line."""
    return message.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n"


def templates() -> dict[str, bytes]:
    return {
        "text": as_data(text_message()),
        "attachment": as_data(attachment_message()),
        "eicar": as_data(eicar_message()),
    }


class SmtpError(Exception):
    pass


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if len(line) < 4:
            raise SmtpError(f"bad reply line {line!r}")
        if line[3:4] != b"-":
            return int(line[:3])


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, expect: int
) -> None:
    writer.write(line + b"\r\n")
    code = await _reply(reader)
    if code != expect:
        raise SmtpError(f"{line.split()[0].decode()}: {code}")


async def send_one(port: int, data: bytes) -> tuple[int, float]:
    """(reply code after DATA, seconds from connect to that reply)."""
    began = time.perf_counter()
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        code = await _reply(reader)
        if code != 220:
            raise SmtpError(f"greeting: {code}")
        await _command(reader, writer, b"EHLO " + CLIENT_NAME, 250)
        await _command(reader, writer, f"MAIL FROM:<{SENDER}>".encode(), 250)
        await _command(reader, writer, f"RCPT TO:<{RECIPIENT}>".encode(), 250)
        await _command(reader, writer, b"DATA", 354)
        writer.write(data)
        code = await _reply(reader)
        seconds = time.perf_counter() - began
        # Not timed: QUIT, and wait until the server has closed the connection, so that
        # this session's next connection never counts against max_connections_per_ip
        # while the server still holds this one.
        await _command(reader, writer, b"QUIT", 221)
        while await reader.read(4096):
            pass
        return code, seconds
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run(port: int, first: int, count: int, sessions: int) -> dict[str, object]:
    mix = templates()
    numbers = iter(range(first, first + count))
    results: list[object] = []
    errors: list[object] = []

    async def session() -> None:
        for n in numbers:  # shared: each session takes the next message number
            kind = MIX[n % len(MIX)]
            data = mix[kind].replace(PLACEHOLDER, str(n).encode(), 1)
            try:
                code, seconds = await asyncio.wait_for(send_one(port, data), 300)
            except (OSError, SmtpError, TimeoutError) as exc:
                errors.append([kind, repr(exc)])
                continue
            results.append([kind, code, round(seconds, 6)])

    began = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
    await asyncio.gather(*(session() for _ in range(sessions)))
    ended = time.monotonic()
    return {"results": results, "errors": errors, "began": began, "ended": ended}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--first", type=int, default=0, help="number of the first message")
    args = parser.parse_args(argv)
    outcome = asyncio.run(run(args.port, args.first, args.messages, max(1, args.sessions)))
    json.dump(outcome, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
