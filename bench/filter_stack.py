#!/usr/bin/env python3
"""clamd and rspamd for the SMTP benchmark's filter scenario, plus a DNS responder.

Run with muninet's venv (`.venv/bin/python bench/filter_stack.py STATE_DIR`) by
smtp_throughput.py, which needs only the standard library itself. It:

- answers DNS on a free 127.0.0.1 UDP port with NXDOMAIN for every name (so rspamd
  and muninet's reverse-DNS lookup get quick, local answers; nothing leaves the machine);
- writes a tiny ClamAV database (an `.ndb` signature for the EICAR string, as the
  tests do; no signatures can be downloaded here) into <STATE_DIR>/../signatures;
- starts muninet's own `Clamd` and `Rspamd` supervisors from the configurations
  muninet renders into STATE_DIR, so `muninet smtpd` with the same state directory
  and DNS settings finds them at their default sockets;
- prints one JSON line (`{"dns_port": ..., "clamd_pid": ..., ...}`) once both answer,
  then waits until its stdin closes (or SIGTERM), stops both and exits.

rspamd's compiled rules are copied in from $BENCH_RSPAMD_CACHE (default
/var/tmp/muninet-cache/bench-rspamd-db, seeded from the tests' cache when that exists)
and saved back after a cold start, so only the first run pays the ~10-15 s compile.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

from mailhost.filter_daemons import Clamd, Rspamd, clamd_binary, rspamd_binary
from provisioning.render_filters import RSPAMD_USER
from provisioning.settings import Settings, load_settings

# Joined at run time, so the whole EICAR string never appears in the source tree.
EICAR = b"".join((b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$", b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"))
RSPAMD_CACHE = Path(
    os.environ.get("BENCH_RSPAMD_CACHE", "/var/tmp/muninet-cache/bench-rspamd-db")  # noqa: S108
)
TEST_RSPAMD_CACHE = Path(
    os.environ.get("TEST_RSPAMD_CACHE", "/var/tmp/muninet-test-cache/rspamd-db")  # noqa: S108
)
NXDOMAIN = 3


class NxdomainServer:
    """A UDP DNS responder on 127.0.0.1 answering every query with NXDOMAIN."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns", daemon=True)

    def start(self) -> NxdomainServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    @staticmethod
    def answer(query: bytes) -> bytes | None:
        """The query's header and question, flagged as an authoritative NXDOMAIN answer."""
        if len(query) < 12:
            return None
        ident, flags, qdcount = struct.unpack("!HHH", query[:6])
        end = 12
        if qdcount:  # copy the first question: QNAME labels, then QTYPE and QCLASS
            while end < len(query) and query[end] != 0:
                end += query[end] + 1
            end += 5
            if end > len(query):
                return None
        opcode_rd = flags & 0x7900  # opcode and RD from the query
        reply_flags = 0x8000 | opcode_rd | 0x0400 | 0x0080 | NXDOMAIN  # QR AA RA rcode
        header = struct.pack("!HHHHHH", ident, reply_flags, min(qdcount, 1), 0, 0, 0)
        return header + query[12:end]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(query)
            if reply is not None:
                self.queries += 1
                self.sock.sendto(reply, peer)


def write_signatures(directory: Path) -> None:
    """One custom signature: the EICAR string anywhere in a file (`.ndb`, target any)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "muninet-bench.ndb").write_text(f"Muninet.Bench.EICAR:0:*:{EICAR.hex()}\n")
    for path in (directory, *directory.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)


def copy_rules(source: Path, target: Path, owner: str | None) -> int:
    """Compiled rule files (*.hs*) from one DBDIR to another; how many were copied."""
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for path in source.glob("*.hs*"):
        copy = target / path.name
        shutil.copyfile(path, copy)
        if owner is not None:
            shutil.chown(copy, owner, owner)
        copied += 1
    return copied


def save_rules(db_dir: Path) -> None:
    """Keep what rspamd compiled for the next run (written to a new dir, then swapped in)."""
    compiled = {path.name for path in db_dir.glob("*.hs*")}
    cached = {path.name for path in RSPAMD_CACHE.glob("*.hs*")}
    if not any(name.endswith(".hs") for name in compiled) or compiled <= cached:
        return
    fresh = RSPAMD_CACHE.with_name(f"{RSPAMD_CACHE.name}.{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    copy_rules(db_dir, fresh, None)
    old = RSPAMD_CACHE.with_name(f"{RSPAMD_CACHE.name}.old.{os.getpid()}")
    if RSPAMD_CACHE.exists():
        RSPAMD_CACHE.rename(old)
    fresh.rename(RSPAMD_CACHE)
    shutil.rmtree(old, ignore_errors=True)


def settings_for(state: Path, dns_port: int) -> Settings:
    return load_settings(
        {
            "MUNINET_PATHS__STATE_DIR": str(state),
            "MUNINET_ANTIVIRUS__DATABASE_DIR": str(state.parent / "signatures"),
            "MUNINET_DNS__NAMESERVERS": "127.0.0.1",
            "MUNINET_DNS__PORT": str(dns_port),
            "MUNINET_LOGGING__LEVEL": "WARNING",
        }
    )


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)  # unwinds through the `finally` below: the daemons get stopped


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: filter_stack.py STATE_DIR", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    state = Path(argv[0]).resolve()
    for name, binary in (("clamd (clamav-daemon)", clamd_binary()), ("rspamd", rspamd_binary())):
        if binary is None:
            print(f"{name} is not installed", file=sys.stderr)
            return 1
    dns = NxdomainServer().start()
    settings = settings_for(state, dns.port)
    write_signatures(Path(settings.antivirus.database_dir))
    owner = RSPAMD_USER if os.geteuid() == 0 else None
    db_dir = state / "rspamd" / "db"
    source = RSPAMD_CACHE if RSPAMD_CACHE.is_dir() else TEST_RSPAMD_CACHE
    cached = copy_rules(source, db_dir, owner) if source.is_dir() else 0
    clamd, rspamd = Clamd(settings), Rspamd(settings)
    try:
        began = time.monotonic()
        clamd_files = clamd.start(timeout=60)
        clamd_seconds = time.monotonic() - began
        began = time.monotonic()
        rspamd_files = rspamd.start(timeout=120)
        rspamd_seconds = time.monotonic() - began
        assert clamd.process is not None
        assert rspamd.process is not None
        ready = {
            "dns_port": dns.port,
            "clamd_pid": clamd.process.pid,
            "rspamd_pid": rspamd.process.pid,
            "clamd_socket": str(clamd_files.socket),
            "rspamd_socket": str(rspamd_files.socket),
            "clamd_start_s": round(clamd_seconds, 2),
            "rspamd_start_s": round(rspamd_seconds, 2),
            "rspamd_cached_rule_files": cached,
        }
        print(json.dumps(ready), flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"filter daemons: {exc}", file=sys.stderr)
        return 1
    finally:
        rspamd.stop()
        clamd.stop()
        save_rules(db_dir)
        dns.stop()
        print(f"dns queries answered: {dns.queries}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
