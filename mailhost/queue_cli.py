"""`muninet queue ...`: look into the mail queue and steer it.

These commands use only the settings and the spool in `<state_dir>/spool` (all but
`flush`, which delivers and so needs the database), so they work while the database
is down, which is when an admin is most likely to look at a growing queue. They read
and change the spool through `provisioning.queue`, as the web admin does, and can run
while the server runs: a message being delivered is locked.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from mailhost.queue_runner import QueueRunner
from provisioning import queue
from provisioning.cli.app import App, emit_json, emit_table, json_option, pass_app
from provisioning.errors import NotFound
from provisioning.queue import QueuedMessage

_SHOWN_HEADER_LINES = 30


def _when(timestamp: float) -> str:
    if timestamp <= 0:
        return "now"
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _message_dict(message: QueuedMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "header": asdict(message.header),
        "state": asdict(message.state),
        "received": _when(message.header.received_at),
        "next_attempt": _when(message.state.next_attempt),
    }


@click.group("queue")
def queue_group() -> None:
    """Inspect and steer the mail queue (remote delivery and local retries)."""


@queue_group.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List queued messages, oldest first."""
    messages = queue.open_queue(app.settings).messages()
    if as_json:
        emit_json([_message_dict(m) for m in messages])
        return
    now = time.time()
    emit_table(
        ["id", "age", "size", "from", "pending", "attempts", "next attempt", "last error"],
        [
            (
                m.id,
                _age(now - m.header.received_at),
                m.header.size,
                f"<{m.header.mail_from}>",
                _recipients(m.state.pending),
                m.state.attempts,
                _when(m.state.next_attempt),
                _first_error(m),
            )
            for m in messages
        ],
    )


@queue_group.command("show")
@click.argument("message_id", metavar="ID")
@json_option
@pass_app
def show(app: App, message_id: str, as_json: bool) -> None:
    """Show one message: envelope, delivery state, and its first header lines."""
    spool = queue.open_queue(app.settings)
    message = queue.get(spool, message_id)
    try:
        data = spool.read_data(message_id)
    except FileNotFoundError:
        raise NotFound("no queued message %(message_id)s", message_id=message_id) from None
    headers = _header_lines(data)
    if as_json:
        emit_json({**_message_dict(message), "headers": headers})
        return
    h, s = message.header, message.state
    click.echo(f"id:           {h.id}")
    click.echo(f"received:     {_when(h.received_at)}")
    click.echo(f"size:         {h.size}")
    click.echo(f"from:         <{h.mail_from}>" + (f" (auth {h.auth_user})" if h.auth_user else ""))
    click.echo(f"smtputf8:     {'yes' if h.smtputf8 else 'no'}")
    click.echo(f"attempts:     {s.attempts}")
    click.echo(f"next attempt: {_when(s.next_attempt)}")
    for rcpt in s.pending:
        error = s.last_errors.get(rcpt)
        click.echo(f"pending:      {rcpt}" + (f"  ({error})" if error else ""))
    for rcpt in s.delivered:
        click.echo(f"delivered:    {rcpt}")
    click.echo("")
    for line in headers:
        click.echo(line)


@queue_group.command("retry")
@click.argument("message_id", metavar="[ID]", required=False)
@pass_app
def retry(app: App, message_id: str | None) -> None:
    """Make one message (or all) due now; the running server tries it on its next scan."""
    count = queue.make_due(queue.open_queue(app.settings), message_id)
    click.echo(f"{count} message(s) due now")


@queue_group.command("delete")
@click.argument("message_id", metavar="ID")
@pass_app
def delete(app: App, message_id: str) -> None:
    """Remove a message from the queue; its sender is not notified."""
    queue.delete(queue.open_queue(app.settings), message_id)
    click.echo(f"message {message_id} deleted")


@queue_group.command("flush")
@pass_app
def flush(app: App) -> None:
    """Try to deliver every queued message now, in the foreground, and report."""
    from mailhost.engine import Engine

    engine = Engine(app.settings, app.database())
    try:
        runner = QueueRunner(
            engine.spool, app.settings, engine.deliver_local, route=engine.spool_recipient
        )
        report = asyncio.run(runner.flush())
        left = len(engine.spool.ids())
    finally:
        engine.close()
    click.echo(f"{report.summary()}; {left} message(s) left in the queue")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _recipients(pending: list[str]) -> str:
    if not pending:
        return "-"
    more = f" +{len(pending) - 1}" if len(pending) > 1 else ""
    return pending[0] + more


def _first_error(message: QueuedMessage) -> str:
    text = message.last_error
    return text if len(text) <= 60 else text[:57] + "..."


def _header_lines(data: bytes) -> list[str]:
    """The first lines of the header section, decoded leniently for display."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = head.decode("utf-8", errors="replace").splitlines()
    if len(lines) > _SHOWN_HEADER_LINES:
        lines = [*lines[:_SHOWN_HEADER_LINES], f"... ({len(lines) - _SHOWN_HEADER_LINES} more)"]
    return lines
