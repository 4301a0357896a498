"""Mail counters of one SMTP process, kept in memory and flushed to the database.

Counting a message is a dictionary increment under a lock (the event loop counts,
the flusher thread takes). A `CounterFlusher` thread in every serving process adds
what was counted to `mail_counters` every `interval` seconds and once more at
shutdown, so the database sees one small transaction per process per interval,
never a write per message. Counts whose write failed are kept for the next round.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import date

from provisioning.db import Database
from provisioning.services import stats as stats_service
from provisioning.services.stats import ACCEPTED, DEFERRED, REJECTED, SPAM, VIRUSES

log = logging.getLogger(__name__)

# Filter verdict labels (mailhost.filters) and the counter each one adds to.
_LABELS = {"viruses": VIRUSES, "spam": SPAM, "tagged": SPAM}


class MailCounters:
    """Counts per (local day, counter name) since the last flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[date, str]] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        key = (date.today(), name)
        with self._lock:
            self._counts[key] += amount

    def accepted(self) -> None:
        self.add(ACCEPTED)

    def refused(self, reply: str) -> None:
        """Count an SMTP refusal by its reply: 5xx rejected, 4xx deferred."""
        if reply[:1] == "5":
            self.add(REJECTED)
        elif reply[:1] == "4":
            self.add(DEFERRED)

    def labels(self, labels: Iterable[str]) -> None:
        """Count the content filters' findings (viruses, spam) of one message."""
        for name in {_LABELS[label] for label in labels if label in _LABELS}:
            self.add(name)

    def take(self) -> Counter[tuple[date, str]]:
        with self._lock:
            taken, self._counts = self._counts, Counter()
        return taken

    def put_back(self, counts: Counter[tuple[date, str]]) -> None:
        with self._lock:
            self._counts.update(counts)

    def flush(self, database: Database) -> int:
        """Add the counts to the database; returns how many were written."""
        taken = self.take()
        if not taken:
            return 0
        try:
            with database.transaction() as session:
                stats_service.add_counts(session, taken)
        except Exception:
            self.put_back(taken)
            raise
        return sum(taken.values())


class CounterFlusher:
    """The thread that flushes one process's counters every `interval` seconds."""

    def __init__(self, counters: MailCounters, database: Database, interval: float = 10) -> None:
        self.counters = counters
        self.database = database
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mail-counters", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is left (called at shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._flush()

    def _flush(self) -> None:
        try:
            self.counters.flush(self.database)
        except Exception:  # the database is down or locked: kept for the next round
            log.exception("writing the mail counters failed")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush()
