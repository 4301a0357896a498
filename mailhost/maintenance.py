"""Periodic housekeeping beside `muninet run`: FreeRADIUS clients, stale sessions, caps.

FreeRADIUS reads its clients (the NAS table) only at start, and a NAS that lost its
link never sends an accounting Stop; this thread restarts FreeRADIUS when the NASes
changed and closes sessions silent for twice the interim interval. FreeRADIUS also
checks the monthly caps only at login, so every round then sends Disconnect or CoA
requests for sessions past their cap (`provisioning.radius_coa.enforce`). In
production a systemd timer runs the same work.
"""

from __future__ import annotations

import logging
import threading

from mailhost.freeradius import FreeRadius
from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.radius_coa import DEFAULT_TIMEOUT as COA_TIMEOUT
from provisioning.radius_coa import DEFAULT_TRIES as COA_TRIES
from provisioning.radius_coa import enforce
from provisioning.services import radius
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings

log = logging.getLogger(__name__)


class Maintenance:
    def __init__(
        self,
        settings: Settings,
        freeradius: FreeRadius | None,
        *,
        interval: float = 30,
        coa_timeout: float = COA_TIMEOUT,
        coa_tries: int = COA_TRIES,
    ) -> None:
        self.settings = settings
        self.freeradius = freeradius
        self.interval = interval
        self.coa_timeout = coa_timeout
        self.coa_tries = coa_tries
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (after the SMTP workers are forked: no threads cross a fork)."""
        self._thread = threading.Thread(target=self._loop, name="maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_once(self, database: Database) -> None:
        if self.freeradius is not None:
            self.freeradius.reload_if_nas_changed()
        with database.transaction() as session:
            ctx = ServiceContext(
                session=session, actor=Actor("system", "maintenance"), settings=self.settings
            )
            closed = radius.close_stale_sessions(ctx)
        if closed:
            log.info("closed %d stale RADIUS session(s)", closed)
        try:  # a NAS that is down only times out; anything else must not end the round either
            done = enforce(
                database,
                Actor("system", "maintenance"),
                timeout=self.coa_timeout,
                tries=self.coa_tries,
            )
            for item in done:
                if item.sent:
                    log.info("cap enforcement: %s", item.describe())
        except Exception:
            log.exception("cap enforcement failed")

    def _loop(self) -> None:
        database = Database.from_settings(self.settings)
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.run_once(database)
                except Exception:  # one bad round must not end housekeeping
                    log.exception("maintenance round failed")
        finally:
            database.dispose()
