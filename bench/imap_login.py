#!/usr/bin/env python3
"""IMAP login latency per password scheme, against Dovecot reading muninet's database.

Production hash costs (config/muninet.toml), one mailbox per scheme, N sequential
logins each over plain IMAP on 127.0.0.1; prints p50/p90/p99 per scheme. Needs root
(Dovecot switches to the mail user) and Dovecot's Debian packages.
    .venv/bin/python bench/imap_login.py [--logins 50]
"""

from __future__ import annotations

import argparse
import imaplib
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

from mailhost.supervisor import Dovecot
from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.passwords import PasswordHasher
from provisioning.services import domains, mailboxes, members
from provisioning.services.context import ServiceContext
from provisioning.settings import load_settings

PASSWORD = "correct horse battery staple"  # noqa: S105 - the bench mailboxes' own
SCHEMES = ("argon2id", "bcrypt", "sha512-crypt")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=50, help="logins per scheme")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="muninet-imap-bench-", dir="/tmp"))
    state.chmod(0o711)
    env = {
        "MUNINET_PATHS__STATE_DIR": str(state),
        "MUNINET_LISTEN__IMAP_PORT": str(free_port()),
        "MUNINET_LISTEN__IMAPS_PORT": str(free_port()),
    }
    settings = load_settings(env)
    database = Database.from_settings(settings)
    database.upgrade()
    with database.transaction() as session:
        ctx = ServiceContext(session=session, actor=Actor("cli", "bench"), settings=settings)
        members.create(ctx, "bench", "Bench")
        domains.create(ctx, "bench.example", member_slug="bench")
        for scheme in SCHEMES:
            scheme_settings = load_settings({**env, "MUNINET_PASSWORDS__SCHEME": scheme})
            stored = PasswordHasher(scheme_settings.passwords).hash(PASSWORD)
            local = scheme.replace("-", "")
            mailboxes.create(ctx, f"{local}@bench.example", "bench", password_hash=stored)
    database.dispose()
    dovecot = Dovecot(settings)
    dovecot.start()
    try:
        print(
            f"{'scheme':<14} {'logins':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}"
        )
        for scheme in SCHEMES:
            user = f"{scheme.replace('-', '')}@bench.example"
            times = []
            for _ in range(args.logins):
                started = time.perf_counter()
                client = imaplib.IMAP4("127.0.0.1", settings.listen.imap_port)
                client.login(user, PASSWORD)
                times.append((time.perf_counter() - started) * 1000)
                client.logout()
            print(
                f"{scheme:<14} {len(times):>6} {percentile(times, 0.5):>8.1f} "
                f"{percentile(times, 0.9):>8.1f} {percentile(times, 0.99):>8.1f} "
                f"{statistics.mean(times):>8.1f}"
            )
    finally:
        dovecot.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
