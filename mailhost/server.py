"""Running the mail host: the engine, its SMTP servers and the queue runner, until stopped."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from mailhost.engine import Engine
from mailhost.smtp import start_servers
from mailhost.stats import CounterFlusher
from provisioning.db import Database
from provisioning.settings import Settings

log = logging.getLogger(__name__)


class _DropDeprecatedLoginData(logging.Filter):
    """aiosmtpd 1.4 warns on every AUTH that its own Session.login_data is deprecated."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_DropDeprecatedLoginData())


async def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    run_queue: bool = True,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve SMTP until SIGTERM/SIGINT (or `stop` is set), then stop accepting and exit."""
    database = Database.from_settings(settings)
    database.require_current()
    engine = Engine(settings, database)
    recovered = engine.spool.recover()
    log.info(
        "spool: %(queued)d queued, %(tmp_removed)d unfinished removed, %(corrupt)d torn",
        recovered,
    )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    servers = await start_servers(engine, reuse_port=reuse_port)
    counters = CounterFlusher(engine.stats, database)
    counters.start()
    listen = settings.listen
    log.info(
        "muninet smtpd (pid %d) listening on %s: MX %d, submission %d, smtps %d",
        os.getpid(),
        listen.address,
        listen.smtp_port,
        listen.submission_port,
        listen.smtps_port,
    )
    if ready is not None:
        ready.set()
    runner_task = None
    if run_queue:
        from mailhost.queue_runner import QueueRunner

        runner = QueueRunner(
            engine.spool, settings, engine.deliver_local, route=engine.spool_recipient
        )
        engine.on_queued = runner.wake
        runner_task = asyncio.create_task(runner.run_forever(stop))
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
        if runner_task is not None:
            await runner_task
        await engine.pipeline.aclose()
        counters.stop()  # the last counts, after every session has ended
        engine.close()
        database.dispose()
