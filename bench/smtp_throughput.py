#!/usr/bin/env python3
"""SMTP benchmark: muninet's MX against a private Postfix, both delivering durably to a Maildir.

Scenario 1, throughput: Postfix's `smtp-source` sends N messages of 5 KB over 20
parallel sessions; the clock runs from its start until every message is a file in
the mailbox's Maildir/new (and, for Postfix, its queue is empty again).

Scenario 2, latency under load: one client sends small messages one after another
(one started every 0.1 s) and times each from connect to the `250` after DATA, first
on an idle server, then while ten other sessions upload 20 MB messages back to back.

Peak memory is the sum of VmHWM over the server's processes (for muninet: the
`muninet smtpd` parent and its forked workers; for Postfix: master and every child
seen while sampling). Everything runs on 127.0.0.1; see bench/README.md.
"""

# Every command line below is built from constants and absolute paths, never from input.
# ruff: noqa: S603

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import platform
import pwd
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MUNINET = REPO / ".venv" / "bin" / "muninet"
DEFAULT_JSON = BENCH / "results" / "latest.json"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
FILTER_STACK = BENCH / "filter_stack.py"  # clamd + rspamd + DNS, run in muninet's venv
MIX_CLIENT = BENCH / "smtp_mix.py"  # scenario 3's client, standard library only

DOMAIN = "bench.example"
RECIPIENT = f"user@{DOMAIN}"
SENDER = "sender@example.com"
LOOPBACK = "127.0.0.1"
CLIENT_NAME = "client.bench.invalid"  # smtplib would otherwise ask DNS for our FQDN
POLICY_RC = Path("/usr/sbin/policy-rc.d")
POSTFIX_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
MIB = 1024 * 1024
KIB = 1024

# Targets from issue 3, printed next to the figures (never used to adjust them).
TARGET_RATIO = 1.0
AIM_RATIO = 1.5
TARGET_P99_RATIO = 2.0
TARGET_RSS_MB = 150.0
# Issue 5: with clamd and the spam filter on, at least half the unfiltered throughput.
TARGET_FILTERED_RATIO = 0.5


class BenchError(RuntimeError):
    """A measurement that could not be made; the reason is reported, never hidden."""


def say(text: str) -> None:
    print(text, flush=True)


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    messages: int
    sessions: int
    message_size: int
    workers: tuple[int, ...]
    repeat: int
    probes: int
    probe_size: int
    large_clients: int
    large_size: int
    probe_interval: float
    load_seconds: float
    postfix: bool
    throughput: bool
    latency: bool
    filters: bool
    mix_messages: int
    mix_clients: int
    json_path: Path
    workdir: Path | None
    keep_workdir: bool


def _worker_list(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError("worker counts must be >= 1")
    return counts


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="muninet MX vs Postfix: durable throughput and latency under load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--messages", type=int, default=5000, help="messages per throughput run")
    add("--sessions", type=int, default=20, help="parallel smtp-source sessions")
    add("--size", type=int, default=5120, help="smtp-source payload bytes (-l)")
    add("--workers", type=_worker_list, default=(1, 2), help="muninet worker counts to measure")
    add("--repeat", type=int, default=1, help="throughput rounds (the summary takes the median)")
    add("--probes", type=int, default=200, help="small messages per latency measurement")
    add("--probe-size", type=int, default=2048, help="bytes of each small message")
    add("--large-clients", type=int, default=10, help="sessions uploading large messages")
    add("--large-size", type=int, default=20 * MIB, help="bytes of each large message")
    add("--probe-interval", type=float, default=0.1, help="seconds between probe starts")
    add("--load-seconds", type=float, default=60, help="longest probe phase under load")
    add("--no-postfix", action="store_true", help="measure muninet only")
    add("--no-throughput", action="store_true", help="skip scenario 1")
    add("--no-latency", action="store_true", help="skip scenario 2")
    add(
        "--filters",
        action="store_true",
        help="add scenario 3: muninet with clamd + rspamd on vs off, same message mix",
    )
    add("--mix-messages", type=int, default=2000, help="messages per scenario 3 run")
    add("--mix-clients", type=int, default=2, help="client processes in scenario 3")
    add("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    add("--workdir", type=Path, help="scratch directory (default: a new one in /var/tmp)")
    add("--keep-workdir", action="store_true", help="keep the scratch directory and its logs")
    args = parser.parse_args(argv)
    for name in (
        *("messages", "sessions", "size", "repeat", "probes", "large_clients"),
        *("mix_messages", "mix_clients"),
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return Options(
        messages=args.messages,
        sessions=args.sessions,
        message_size=args.size,
        workers=args.workers,
        repeat=args.repeat,
        probes=args.probes,
        probe_size=args.probe_size,
        large_clients=args.large_clients,
        large_size=args.large_size,
        probe_interval=args.probe_interval,
        load_seconds=args.load_seconds,
        postfix=not args.no_postfix,
        throughput=not args.no_throughput,
        latency=not args.no_latency,
        filters=args.filters,
        mix_messages=args.mix_messages,
        mix_clients=args.mix_clients,
        json_path=args.json,
        workdir=args.workdir,
        keep_workdir=args.keep_workdir,
    )


# -- small helpers ----------------------------------------------------------------------------


def tool(name: str) -> str:
    """The absolute path of a system program (sbin included: tools live there)."""
    path = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if path is None:
        raise BenchError(f"{name} not found")
    return path


def run(command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; a failure raises BenchError with its output."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise BenchError(f"{' '.join(command)} failed ({result.returncode}): {output[-2000:]}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def port_open(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def count_files(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for _ in entries)
    except FileNotFoundError:
        return 0


def remove_files(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            os.unlink(entry.path)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def settle_disks() -> None:
    """Flush what earlier runs left dirty, so one run's writeback is not billed to the next."""
    os.sync()
    time.sleep(1)


# -- processes and memory ---------------------------------------------------------------------


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    return parents


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    parents = _parents()
    if root not in parents:
        return []
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    tree = [root]
    for pid in tree:  # grows while iterating: a breadth-first walk
        tree.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time used by these processes and by their children that have exited."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) in KiB; zeros for a process that just exited."""
    hwm = rss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return hwm, rss


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class MemoryPeak:
    """Maxima over the samples of per-sample sums across a server's processes (MB)."""

    hwm_mb: float = 0.0  # sum of VmHWM: what the issue's target is about
    rss_mb: float = 0.0  # sum of VmRSS at the busiest sample
    pss_mb: float = 0.0  # sum of PSS: shared pages counted once
    processes: int = 0  # most processes alive at one sample
    per_process_hwm_mb: list[float] = field(default_factory=list)


class MemorySampler:
    """Samples a server's process tree in the background while a scenario runs."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.25) -> None:
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory", daemon=True)
        self.peak = MemoryPeak()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # VmHWM only grows: the last sample holds the long-lived processes' peaks

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> None:
        pids = self._pids()
        statuses = [_status_kib(pid) for pid in pids]
        hwm = [status[0] / KIB for status in statuses]
        peak = self.peak
        if sum(hwm) >= peak.hwm_mb:
            peak.hwm_mb = round(sum(hwm), 1)
            peak.per_process_hwm_mb = [round(value, 1) for value in hwm]
        peak.rss_mb = max(peak.rss_mb, round(sum(status[1] for status in statuses) / KIB, 1))
        peak.pss_mb = max(peak.pss_mb, round(sum(_pss_kib(pid) for pid in pids) / KIB, 1))
        peak.processes = max(peak.processes, len(pids))


# -- installing Postfix -----------------------------------------------------------------------


@contextlib.contextmanager
def services_blocked() -> Iterator[None]:
    """A policy-rc.d that forbids starting services, unless one is already in place."""
    if POLICY_RC.exists():
        yield
        return
    POLICY_RC.write_text("#!/bin/sh\n# muninet bench: no service starts during install\nexit 101\n")
    POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC.unlink(missing_ok=True)


def postfix_installed() -> bool:
    return all(Path(path).exists() for path in ("/usr/sbin/postfix", "/usr/sbin/smtp-source"))


def ensure_postfix() -> None:
    """Install Debian's postfix (with smtp-source) non-interactively, starting no daemon."""
    if postfix_installed():
        return
    if os.geteuid() != 0:
        raise BenchError("postfix is not installed and installing it needs root")
    say("installing postfix (no configuration, no service start) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(
        [tool("debconf-set-selections")],
        input="postfix postfix/main_mailer_type select No configuration\n",
        env=env,
    )
    install = [tool("apt-get"), "install", "-y", "-q", "--no-install-recommends", "postfix"]
    with services_blocked():
        try:
            run(install, env=env)
        except BenchError:  # stale package lists: refresh once and retry
            run([tool("apt-get"), "update", "-q"], env=env)
            run(install, env=env)
    if not postfix_installed():
        raise BenchError("postfix installed but /usr/sbin/postfix or smtp-source is missing")


# -- the servers ------------------------------------------------------------------------------


class Server(Protocol):
    label: str
    port: int
    maildir: Path

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> list[int]: ...
    def queue_empty(self) -> bool: ...
    def problem(self) -> str | None: ...
    def log_tail(self) -> str: ...


def delivered(server: Server) -> int:
    return count_files(server.maildir / "new")


def clear_mailbox(server: Server) -> None:
    for sub in ("new", "cur", "tmp"):
        remove_files(server.maildir / sub)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


def signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Muninet:
    """`muninet smtpd --workers N --no-queue` on a private state directory.

    --no-queue: every recipient here is local, so nothing is ever queued; the
    queue runner would only idle.
    """

    def __init__(
        self, state: Path, logs: Path, workers: int, filters: FilterStack | None = None
    ) -> None:
        self.state = state
        self.logs = logs
        self.workers = workers
        self.filters = filters
        self.label = f"muninet ({workers} worker{'s' if workers > 1 else ''})"
        if filters is not None:
            self.label += " + filters"
        self.port = 0
        self.ports: dict[str, int] = {}
        self.maildir = state / "mail" / DOMAIN / "user" / "Maildir"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @staticmethod
    def base_env(state: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUNINET_")}
        env.update(
            {
                "MUNINET_PATHS__STATE_DIR": str(state),
                "MUNINET_ASSOCIATION__HOSTNAME": "mx.bench.invalid",
                # Nothing may leave the machine: DNS goes to a dead loopback port.
                "MUNINET_DNS__NAMESERVERS": LOOPBACK,
                "MUNINET_DNS__PORT": "9",
                "MUNINET_DNS__TIMEOUT": "1s",
                # The engine alone; filters would measure clamd and rspamd.
                "MUNINET_ANTIVIRUS__ENABLED": "false",
                "MUNINET_SPAM__ENABLED": "false",
                "MUNINET_SENDER_AUTH__ENABLED": "false",
            }
        )
        # The one setting worth comparing from the command line: syncfs or fsync.
        if durability := os.environ.get("MUNINET_SMTP__DURABILITY"):
            env["MUNINET_SMTP__DURABILITY"] = durability
        return env

    @classmethod
    def provision(cls, state: Path) -> None:
        """Database, member, domain and mailbox through the CLI, as an operator would."""
        env = cls.base_env(state)
        muninet = str(MUNINET)
        for command in (
            "db upgrade",
            "member add bench --name Bench --max-mailboxes 10 --quota 100G",
            f"domain add {DOMAIN} --member bench",
            f"mailbox add {RECIPIENT} --member bench --generate --quota 50G",
        ):
            run([muninet, *command.split()], env=env)

    def start(self) -> None:
        self.ports = {"SMTP": free_port(), "SUBMISSION": free_port(), "SMTPS": free_port()}
        self.port = self.ports["SMTP"]
        env = self.base_env(self.state)
        env.update({f"MUNINET_LISTEN__{name}_PORT": str(p) for name, p in self.ports.items()})
        if self.filters is not None:
            # clamd and rspamd at their default sockets in the same state directory;
            # DNS (the spam filter's reverse lookups) to the stack's NXDOMAIN responder.
            env.update(
                {
                    "MUNINET_ANTIVIRUS__ENABLED": "true",
                    "MUNINET_SPAM__ENABLED": "true",
                    "MUNINET_DNS__PORT": str(self.filters.dns_port),
                }
            )
        suffix = "-filters" if self.filters is not None else ""
        self.log_path = self.logs / f"muninet-{self.workers}w{suffix}-{time.time_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(MUNINET), "smtpd", "--workers", str(self.workers), "--no-queue"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, 60, f"{self.label} to listen")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchError(f"{self.label} exited with {self.process.returncode}")
        listening = all(port_open(port) for port in self.ports.values())
        return listening and len(self.pids()) >= self.workers

    def stop(self) -> None:
        if self.process is None:
            return
        pids = self.pids()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            say(f"{self.label} did not stop in 30 s: killing it")
            signal_all(pids, signal.SIGKILL)
            self.process.wait(timeout=10)
        # Workers left behind by a parent that had to be killed.
        signal_all([pid for pid in pids if Path(f"/proc/{pid}").exists()], signal.SIGKILL)
        self.process = None

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process is not None else []

    def queue_empty(self) -> bool:
        return True  # `250` only after the Maildir file is durable: nothing is left to do

    def problem(self) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            return f"{self.label} exited with {self.process.returncode}"
        return None

    def log_tail(self) -> str:
        return tail(self.log_path) if self.log_path else ""


class Postfix:
    """A private Postfix instance: own directories, 127.0.0.1 only, virtual(8) into a Maildir."""

    label = "postfix"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "etc"
        self.queue = root / "queue"
        self.data = root / "data"
        self.mail = root / "mail"
        self.maildir = self.mail / DOMAIN / "user" / "Maildir"
        self.maillog = root / "maillog"
        self.port = 0
        self.started = False
        owner = pwd.getpwnam("nobody")  # virtual(8) refuses root; any uid >= 100 will do
        self.uid, self.gid = owner.pw_uid, owner.pw_gid

    def _prepare(self) -> None:
        postfix_user = pwd.getpwnam("postfix")
        for directory in (self.config, self.queue, self.data, self.mail):
            directory.mkdir(parents=True, exist_ok=True)
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        os.chown(self.mail, self.uid, self.gid)
        self.port = free_port()
        (self.config / "main.cf").write_text(self._main_cf())
        (self.config / "master.cf").write_text(self._master_cf())

    def _main_cf(self) -> str:
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "myhostname": "postfix.bench.invalid",
            "mydomain": "bench.invalid",
            "mydestination": "",
            "relay_domains": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.root,
            "biff": "no",
            # Room for scenario 2's 20 MB messages (the defaults are 10 MB and 50 MB).
            "message_size_limit": 64 * MIB,
            "virtual_mailbox_limit": 0,
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_base": self.mail,
            "virtual_mailbox_maps": f"inline:{{ {RECIPIENT}={DOMAIN}/user/Maildir/ }}",
            "virtual_uid_maps": f"static:{self.uid}",
            "virtual_gid_maps": f"static:{self.gid}",
        }
        return "".join(f"{name} = {value}\n" for name, value in settings.items())

    def _master_cf(self) -> str:
        # service, type, private, unpriv, chroot (always n), wakeup, maxproc, command
        services = [
            (f"{LOOPBACK}:{self.port}", "inet", "n", "-", "-", "-", "smtpd"),
            ("pickup", "unix", "n", "-", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "300", "1", "qmgr"),
            ("rewrite", "unix", "-", "-", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "-", "-", "proxymap"),
            ("proxywrite", "unix", "-", "-", "-", "1", "proxymap"),
            ("smtp", "unix", "-", "-", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "-", "-", "showq"),
            ("error", "unix", "-", "-", "-", "-", "error"),
            ("retry", "unix", "-", "-", "-", "-", "error"),
            ("discard", "unix", "-", "-", "-", "-", "discard"),
            ("local", "unix", "-", "n", "-", "-", "local"),
            ("virtual", "unix", "-", "n", "-", "-", "virtual"),
            ("lmtp", "unix", "-", "-", "-", "-", "lmtp"),
            ("anvil", "unix", "-", "-", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "-", "1", "postlogd"),
        ]
        lines = [
            f"{name:<22} {kind:<10} {private:<3} {unpriv:<3} n {wakeup:<5} {maxproc:<3} {cmd}"
            for name, kind, private, unpriv, wakeup, maxproc, cmd in services
        ]
        return "\n".join(lines) + "\n"

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([tool("postfix"), "-c", str(self.config), *args])

    def start(self) -> None:
        self._prepare()
        self._postfix("start")
        self.started = True
        wait_until(lambda: port_open(self.port), 30, "postfix to listen")

    def stop(self) -> None:
        if not self.started:
            return
        master = self._master_pid()
        try:
            self._postfix("stop")
            if master is not None:
                wait_until(lambda: not process_tree(master), 30, "postfix to stop")
        except BenchError as exc:
            say(f"postfix stop: {exc}; aborting it")
            with contextlib.suppress(BenchError):
                self._postfix("abort")
            if master is not None:
                signal_all(process_tree(master), signal.SIGKILL)
        self.started = False

    def _master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> list[int]:
        master = self._master_pid()
        return process_tree(master) if master is not None else []

    def queue_empty(self) -> bool:
        return all(self._queue_files(name) == 0 for name in POSTFIX_QUEUES)

    def _queue_files(self, name: str) -> int:
        return sum(len(files) for _, _, files in os.walk(self.queue / name))

    def problem(self) -> str | None:
        deferred = self._queue_files("deferred")
        return f"{deferred} message(s) deferred by postfix" if deferred else None

    def log_tail(self) -> str:
        return tail(self.maillog)


class FilterStack:
    """clamd, rspamd and an NXDOMAIN DNS responder: bench/filter_stack.py in muninet's venv.

    The daemons use muninet's own supervisors and rendered configurations in the
    benchmark's muninet state directory, so a `muninet smtpd` with the filters on
    finds them at their default sockets. The stack stops when its stdin is closed.
    """

    def __init__(self, state: Path, logs: Path) -> None:
        self.state = state
        self.log_path = logs / "filter-stack.log"
        self.process: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    @property
    def dns_port(self) -> int:
        return int(self.info["dns_port"])

    def start(self) -> None:
        say("starting clamd and rspamd (a cold rspamd compiles its rules first: ~15 s) ...")
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [str(VENV_PYTHON), str(FILTER_STACK), str(self.state)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.append(self.process.stdout.readline())  # type: ignore[union-attr]
        )
        reader.start()
        reader.join(timeout=240)
        if not lines or not lines[0].strip():
            self.stop()
            raise BenchError(f"clamd/rspamd did not start:\n{tail(self.log_path)}")
        self.info = json.loads(lines[0])
        say(
            f"clamd ready in {self.info['clamd_start_s']} s, rspamd in "
            f"{self.info['rspamd_start_s']} s ({self.info['rspamd_cached_rule_files']} "
            "cached rule files)"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pids = process_tree(self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                signal_all(pids, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def pids(self) -> list[int]:
        """clamd's and rspamd's processes (rspamd: main process and workers)."""
        if self.process is None or not self.info:
            return []
        return process_tree(self.info["clamd_pid"]) + process_tree(self.info["rspamd_pid"])


def wait_delivered(server: Server, expected: int, timeout: float) -> None:
    """Until `expected` files are in Maildir/new and the server has nothing left queued."""

    def done() -> bool:
        problem = server.problem()
        if problem:
            raise BenchError(f"{problem}\n{server.log_tail()}")
        return delivered(server) >= expected and server.queue_empty()

    try:
        wait_until(done, timeout, f"{expected} messages in {server.label}'s Maildir")
    except BenchError as exc:
        raise BenchError(f"{exc} (found {delivered(server)})\n{server.log_tail()}") from None


# -- scenario 1: throughput -------------------------------------------------------------------


def smtp_source(port: int, messages: int, sessions: int, size: int) -> None:
    command = [tool("smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    command += ["-f", SENDER, "-t", RECIPIENT, f"{LOOPBACK}:{port}"]
    run(command, timeout=max(600, messages))


def measure_throughput(server: Server, opts: Options) -> dict[str, Any]:
    warmup = 2 * opts.sessions
    smtp_source(server.port, warmup, opts.sessions, opts.message_size)
    wait_delivered(server, warmup, 60)
    clear_mailbox(server)
    with MemorySampler(server.pids) as memory:
        cpu_before = cpu_seconds(server.pids())
        began = time.perf_counter()
        smtp_source(server.port, opts.messages, opts.sessions, opts.message_size)
        sent = time.perf_counter()
        wait_delivered(server, opts.messages, max(120, opts.messages / 20))
        done = time.perf_counter()
        cpu = cpu_seconds(server.pids()) - cpu_before
    seconds = done - began
    return {
        "messages": opts.messages,
        "sessions": opts.sessions,
        "payload_bytes": opts.message_size,
        "seconds": round(seconds, 3),
        "msg_per_s": round(opts.messages / seconds, 1),
        "smtp_source_seconds": round(sent - began, 3),
        "accept_msg_per_s": round(opts.messages / (sent - began), 1),
        "server_cpu_seconds": round(cpu, 2),
        "cpu_ms_per_msg": round(1000 * cpu / opts.messages, 2),
        "memory": asdict(memory.peak),
    }


# -- scenario 2: small-message latency while large messages arrive ----------------------------


def small_message(size: int, tag: str) -> bytes:
    header = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: probe {tag}\r\n"
        f"Message-ID: <{tag}@bench.invalid>\r\n\r\n"
    )
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * max(1, (size - len(header)) // len(line))
    return (header + body).encode()


def large_message_data(size: int) -> bytes:
    """A MIME message with a base64 attachment (76-char lines), as DATA: dot-stuffed, with
    the terminating `.` line. Ready to send as is, so no client CPU is spent per send."""
    header = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: large upload\r\n"
        "Message-ID: <large@bench.invalid>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain\r\n\r\nScan attached.\r\n--b\r\n"
        "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="scan.pdf"\r\n\r\n'
    ).encode()
    trailer = b"--b--\r\n"
    lines = max(1, (size - len(header) - len(trailer)) // 78)
    attachment = base64.encodebytes(os.urandom(lines * 57)).replace(b"\n", b"\r\n")
    message = header + attachment + trailer
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def _expect(reply: tuple[int, bytes], code: int, step: str) -> None:
    if reply[0] != code:
        raise smtplib.SMTPResponseException(reply[0], f"{step}: {reply[1]!r}".encode())


class LargeUploads:
    """`clients` sessions uploading large messages back to back until the block ends.

    smtplib in threads; the DATA payload is prepared once and written with
    `SMTP.send`, so the client's own CPU (and GIL) barely touch the probe thread.
    """

    def __init__(self, port: int, clients: int, size: int) -> None:
        self.port = port
        self.clients = clients
        self.data = large_message_data(size)
        self.size = len(self.data)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started: set[int] = set()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), name=f"large-{n}", daemon=True)
            for n in range(clients)
        ]
        self.accepted = 0
        self.errors: list[str] = []
        self.began = self.ended = 0.0

    def __enter__(self) -> LargeUploads:
        self.began = time.perf_counter()
        for thread in self._threads:
            thread.start()
        wait_until(self._all_started, 120, "every large upload to reach DATA")
        time.sleep(0.5)  # let the uploads get going before the first probe
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=600)
        self.ended = time.perf_counter()

    def _all_started(self) -> bool:
        with self._lock:
            if self.errors and not self.accepted:
                raise BenchError(f"large uploads fail: {self.errors[0]}")
            return len(self._started) == self.clients

    def _client(self, number: int) -> None:
        while not self._stop.is_set():
            try:
                self._send_one(number)
            except (OSError, smtplib.SMTPException) as exc:
                with self._lock:
                    self.errors.append(repr(exc))
                time.sleep(0.2)

    def _send_one(self, number: int) -> None:
        with smtplib.SMTP(LOOPBACK, self.port, CLIENT_NAME, timeout=300) as client:
            _expect(client.ehlo(), 250, "EHLO")
            _expect(client.mail(SENDER, [f"SIZE={self.size}"]), 250, "MAIL")
            _expect(client.rcpt(RECIPIENT), 250, "RCPT")
            _expect(client.docmd("DATA"), 354, "DATA")
            with self._lock:
                self._started.add(number)
            client.send(self.data)
            _expect(client.getreply(), 250, "end of DATA")
        with self._lock:
            self.accepted += 1

    def summary(self) -> dict[str, Any]:
        seconds = max(self.ended - self.began, 1e-9)
        return {
            "clients": self.clients,
            "message_bytes": self.size,
            "accepted": self.accepted,
            "failed": len(self.errors),
            "first_error": self.errors[0] if self.errors else None,
            "seconds": round(seconds, 2),
            "mb_per_s": round(self.accepted * self.size / MIB / seconds, 1),
        }


def probe(
    port: int, count: int, size: int, tag: str, *, interval: float = 0, seconds: float = math.inf
) -> list[float]:
    """Seconds from connect to the `250` after DATA, for `count` messages one after another.

    A message starts `interval` seconds after the previous one started (at once if that
    one took longer); fewer are sent if `seconds` run out first.
    """
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    next_start = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, next_start - time.monotonic()))
        if time.monotonic() > deadline:
            break
        next_start = time.monotonic() + interval
        message = small_message(size, f"{tag}-{n}")
        began = time.perf_counter()
        client = smtplib.SMTP(LOOPBACK, port, CLIENT_NAME, timeout=300)
        try:
            client.sendmail(SENDER, [RECIPIENT], message)
            latencies.append(time.perf_counter() - began)
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()
    return latencies


def nearest_rank(ordered: Sequence[float], fraction: float) -> float:
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency_stats(latencies: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    ms = 1000.0
    return {
        "count": len(ordered),
        "p50_ms": round(nearest_rank(ordered, 0.50) * ms, 2),
        "p90_ms": round(nearest_rank(ordered, 0.90) * ms, 2),
        "p99_ms": round(nearest_rank(ordered, 0.99) * ms, 2),
        "max_ms": round(ordered[-1] * ms, 2),
        "mean_ms": round(statistics.fmean(ordered) * ms, 2),
    }


def measure_latency(server: Server, opts: Options) -> dict[str, Any]:
    warmup, pace = 20, opts.probe_interval
    with MemorySampler(server.pids) as memory:
        probe(server.port, warmup, opts.probe_size, "warmup")
        idle = probe(server.port, opts.probes, opts.probe_size, "idle", interval=pace)
        with LargeUploads(server.port, opts.large_clients, opts.large_size) as load:
            loaded = probe(
                server.port,
                opts.probes,
                opts.probe_size,
                "loaded",
                interval=pace,
                seconds=opts.load_seconds,
            )
        expected = warmup + len(idle) + len(loaded) + load.accepted
        wait_delivered(server, expected, 300)
    idle_stats, loaded_stats = latency_stats(idle), latency_stats(loaded)
    return {
        "probe_bytes": opts.probe_size,
        "probe_interval_s": pace,
        "idle": idle_stats,
        "loaded": loaded_stats,
        "p99_ratio": round(loaded_stats["p99_ms"] / idle_stats["p99_ms"], 2),
        "large": load.summary(),
        "memory": asdict(memory.peak),
    }


# -- scenario 3: the same message mix with clamd + rspamd on and off -------------------------


def run_mix(port: int, messages: int, opts: Options, first: int = 0) -> dict[str, Any]:
    """bench/smtp_mix.py in `opts.mix_clients` processes; their results merged.

    The clock runs from the first client's first connect to the last client's last
    reply (clients report CLOCK_MONOTONIC, which all processes share).
    """
    clients = min(opts.mix_clients, messages)
    commands = []
    start = first
    for n in range(clients):
        count = messages // clients + (1 if n < messages % clients else 0)
        sessions = max(1, opts.sessions // clients + (1 if n < opts.sessions % clients else 0))
        commands.append(
            [
                *(sys.executable, str(MIX_CLIENT), "--port", str(port)),
                *("--messages", str(count), "--sessions", str(sessions), "--first", str(start)),
            ]
        )
        start += count
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=max(600, messages))
        if process.returncode != 0:
            raise BenchError(f"smtp_mix.py failed ({process.returncode}): {err.strip()[-2000:]}")
        outputs.append(json.loads(out))
    return {
        "results": [row for out in outputs for row in out["results"]],
        "errors": [row for out in outputs for row in out["errors"]],
        "seconds": max(out["ended"] for out in outputs) - min(out["began"] for out in outputs),
    }


def filter_headers(maildir_new: Path) -> dict[str, dict[str, int]]:
    """How many delivered messages carry which antivirus verdict and spam status.

    Proof that the filters ran: with them off neither header is there; rspamd being
    unreachable shows as `X-Spam-Status: Unknown` (the spam filter fails open).
    """
    antivirus: dict[str, int] = {}
    spam: dict[str, int] = {}
    for entry in os.scandir(maildir_new):
        with open(entry.path, "rb") as file:
            head = file.read(16384).split(b"\r\n\r\n", 1)[0].decode(errors="replace")
        found_av = found_spam = "(none)"
        for line in head.splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "x-muninet-antivirus":
                found_av = value.strip()
            elif name.lower() == "x-spam-status":
                found_spam = value.strip().split(",")[0]
        antivirus[found_av] = antivirus.get(found_av, 0) + 1
        spam[found_spam] = spam.get(found_spam, 0) + 1
    return {"antivirus": antivirus, "spam_status": spam}


def measure_mix(server: Server, opts: Options, stack: FilterStack) -> dict[str, Any]:
    warmup = run_mix(server.port, 2 * opts.sessions, opts, first=10**7)
    if not warmup["results"]:
        raise BenchError(f"warm-up failed: {warmup['errors'][:1]}")
    clear_mailbox(server)
    with MemorySampler(server.pids) as memory, MemorySampler(stack.pids) as daemon_memory:
        cpu_before = cpu_seconds(server.pids())
        daemon_cpu_before = cpu_seconds(stack.pids())
        outcome = run_mix(server.port, opts.mix_messages, opts)
        accepted = sum(1 for _, code, _ in outcome["results"] if code == 250)
        wait_delivered(server, accepted, 120)  # muninet: at once (250 after delivery)
        cpu = cpu_seconds(server.pids()) - cpu_before
        daemon_cpu = cpu_seconds(stack.pids()) - daemon_cpu_before
    results, seconds = outcome["results"], outcome["seconds"]
    if not results:
        raise BenchError(f"every message failed: {outcome['errors'][:1]}")
    codes: dict[str, dict[str, int]] = {}
    by_kind: dict[str, list[float]] = {}
    for kind, code, latency in results:
        per_kind = codes.setdefault(kind, {})
        per_kind[str(code)] = per_kind.get(str(code), 0) + 1
        by_kind.setdefault(kind, []).append(latency)
    answered = len(results)
    return {
        "filters": isinstance(server, Muninet) and server.filters is not None,
        "messages": answered,
        "sessions": opts.sessions,
        "clients": opts.mix_clients,
        "seconds": round(seconds, 3),
        "msg_per_s": round(answered / seconds, 1),
        "accepted_msg_per_s": round(accepted / seconds, 1),
        "codes": codes,
        "client_errors": len(outcome["errors"]),
        "first_client_error": outcome["errors"][0] if outcome["errors"] else None,
        "latency": latency_stats([latency for _, _, latency in results]),
        "latency_by_kind": {kind: latency_stats(values) for kind, values in by_kind.items()},
        "server_cpu_seconds": round(cpu, 2),
        "cpu_ms_per_msg": round(1000 * cpu / answered, 2),
        "filters_cpu_ms_per_msg": round(1000 * daemon_cpu / answered, 2),
        "memory": asdict(memory.peak),
        "filters_memory": asdict(daemon_memory.peak),
        "delivered_headers": filter_headers(server.maildir / "new"),
    }


def run_filters(opts: Options, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scenario 3: per round and worker count, muninet with the filters off and on.

    The daemons run throughout (idle during the unfiltered runs); the order of the
    two runs alternates between rounds.
    """
    state, logs = work / "muninet", work / "logs"
    stack = FilterStack(state, logs)
    results: list[dict[str, Any]] = []
    try:
        stack.start()
        for round_ in range(opts.repeat):
            for workers in opts.workers:
                pair: list[Server] = [
                    Muninet(state, logs, workers),
                    Muninet(state, logs, workers, filters=stack),
                ]
                for server in pair if round_ % 2 == 0 else reversed(pair):
                    result = measure(server, "filters", lambda s, o: measure_mix(s, o, stack), opts)
                    results.append({"round": round_ + 1, "workers": workers, **result})
    except BenchError as exc:
        say(f"[filters] FAILED: {exc}")
        results.append({"server": "clamd + rspamd", "round": 0, "error": str(exc)})
    finally:
        stack.stop()
    return results, stack.info


# -- running everything -----------------------------------------------------------------------


Measure = Callable[[Server, Options], dict[str, Any]]


def measure(server: Server, scenario: str, func: Measure, opts: Options) -> dict[str, Any]:
    """Start the server, measure, stop it; a failure is recorded, and the run goes on."""
    say(f"[{scenario}] {server.label} ...")
    clear_mailbox(server)
    settle_disks()
    try:
        with running(server):
            result = {"server": server.label, **func(server, opts)}
    except (BenchError, OSError, smtplib.SMTPException, subprocess.SubprocessError) as exc:
        say(f"[{scenario}] {server.label} FAILED: {exc}")
        return {"server": server.label, "error": str(exc)}
    finally:
        clear_mailbox(server)
    say(f"[{scenario}] {server.label}: {one_line(result)}")
    return result


def one_line(result: dict[str, Any]) -> str:
    memory = result["memory"]["hwm_mb"]
    if "codes" in result:  # scenario 3
        return (
            f"{result['messages']} messages in {result['seconds']:.2f} s = "
            f"{result['msg_per_s']:.0f} msg/s, p50 {result['latency']['p50_ms']:.1f} ms, "
            f"p99 {result['latency']['p99_ms']:.1f} ms, peak RSS {memory:.0f} MB"
        )
    if "msg_per_s" in result:
        return (
            f"{result['messages']} messages in {result['seconds']:.2f} s = "
            f"{result['msg_per_s']:.0f} msg/s, peak RSS {memory:.0f} MB"
        )
    return (
        f"p99 idle {result['idle']['p99_ms']:.1f} ms, under load "
        f"{result['loaded']['p99_ms']:.1f} ms ({result['p99_ratio']:.2f}x), "
        f"{result['large']['accepted']} large messages, peak RSS {memory:.0f} MB"
    )


def make_servers(opts: Options, work: Path) -> list[Server]:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with_postfix = opts.postfix and (opts.throughput or opts.latency)
    if opts.throughput or with_postfix:
        ensure_postfix()  # smtp-source, the throughput client, comes with it
    servers: list[Server] = []
    if with_postfix:
        servers.append(Postfix(work / "postfix"))
    state = work / "muninet"
    say("provisioning muninet (database, member, domain, mailbox) ...")
    Muninet.provision(state)
    servers.extend(Muninet(state, logs, workers) for workers in opts.workers)
    return servers


def run_all(opts: Options, work: Path) -> dict[str, Any]:
    servers = make_servers(opts, work)
    meta = metadata(opts)
    throughput = (
        [
            {"round": round_ + 1, **measure(server, "throughput", measure_throughput, opts)}
            for round_ in range(opts.repeat)
            for server in servers
        ]
        if opts.throughput
        else []
    )
    latency = (
        [measure(server, "latency", measure_latency, opts) for server in servers]
        if opts.latency
        else []
    )
    filters: list[dict[str, Any]] = []
    if opts.filters:
        filters, meta["filter_daemons"] = run_filters(opts, work)
    meta["load_average_after"] = load_average()
    return {
        "meta": meta,
        "throughput": throughput,
        "latency": latency,
        "filters": filters,
        "summary": summarize(throughput, latency, filters),
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def metadata(opts: Options) -> dict[str, Any]:
    git = [tool("git"), "-C", str(REPO)]
    commit = run([*git, "rev-parse", "--short", "HEAD"]).stdout.strip()
    changed = run([*git, "status", "--porcelain", "--untracked-files=no"]).stdout.split("\n")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "load_average_before": load_average(),
        "commit": commit,
        "uncommitted_changes": sorted(line[3:] for line in changed if line.strip()),
        "postfix": (
            run([tool("postconf"), "-d", "-h", "mail_version"]).stdout.strip()
            if postfix_installed()
            else None
        ),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
    }


# -- summary ----------------------------------------------------------------------------------


def summarize(
    throughput: list[dict[str, Any]], latency: list[dict[str, Any]], filters: list[dict[str, Any]]
) -> dict[str, Any]:
    rates: dict[str, list[float]] = {}
    for result in ok(throughput):
        rates.setdefault(result["server"], []).append(result["msg_per_s"])
    median = {label: round(statistics.median(values), 1) for label, values in rates.items()}
    postfix = median.get(Postfix.label)
    ratios = {
        label: round(rate / postfix, 2)
        for label, rate in median.items()
        if postfix and label != Postfix.label
    }
    p99_ratios = {r["server"]: r["p99_ratio"] for r in ok(latency)}
    memory = {"throughput": peak_memory(throughput), "latency": peak_memory(latency)}
    filtered = summarize_filters(filters)
    return {
        "msg_per_s": median,
        "ratio_to_postfix": ratios,
        "p99_ratio": p99_ratios,
        "peak_rss_mb": memory,
        "filters": filtered,
        "targets": targets(ratios, p99_ratios, memory, filtered),
    }


def summarize_filters(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per worker count: median msg/s and p99 with the filters off and on, and on/off."""
    runs: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    for result in ok(results):
        runs.setdefault((result["workers"], result["filters"]), []).append(result)
    summary: dict[str, Any] = {}
    for workers in sorted({workers for workers, _ in runs}):
        off, on = runs.get((workers, False), []), runs.get((workers, True), [])
        if not off or not on:
            continue
        rate_off = statistics.median(r["msg_per_s"] for r in off)
        rate_on = statistics.median(r["msg_per_s"] for r in on)
        summary[str(workers)] = {
            "msg_per_s_off": round(rate_off, 1),
            "msg_per_s_on": round(rate_on, 1),
            "ratio_on_off": round(rate_on / rate_off, 2),
            "p99_ms_off": statistics.median(r["latency"]["p99_ms"] for r in off),
            "p99_ms_on": statistics.median(r["latency"]["p99_ms"] for r in on),
        }
    return summary


def ok(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [result for result in results if "error" not in result]


def peak_memory(results: list[dict[str, Any]]) -> dict[str, float]:
    """The highest VmHWM sum per server over the runs of one scenario."""
    memory: dict[str, float] = {}
    for result in ok(results):
        label = result["server"]
        memory[label] = max(memory.get(label, 0.0), result["memory"]["hwm_mb"])
    return memory


def _worst_muninet(values: dict[str, float]) -> float | None:
    return max((v for label, v in values.items() if label != Postfix.label), default=None)


def targets(
    ratios: dict[str, float],
    p99_ratios: dict[str, float],
    memory: dict[str, dict[str, float]],
    filters: dict[str, Any],
) -> dict[str, Any]:
    best_ratio = max(ratios.values(), default=None)
    worst_p99 = _worst_muninet(p99_ratios)
    worst_filtered = min((f["ratio_on_off"] for f in filters.values()), default=None)
    return {
        "filtered_at_least_half": _check(worst_filtered, lambda v: v >= TARGET_FILTERED_RATIO),
        "throughput_at_least_postfix": _check(best_ratio, lambda v: v >= TARGET_RATIO),
        "throughput_aim_1_5x": _check(best_ratio, lambda v: v >= AIM_RATIO),
        "p99_under_load_within_2x": _check(worst_p99, lambda v: v <= TARGET_P99_RATIO),
        "peak_rss_under_150mb_throughput": _check(
            _worst_muninet(memory["throughput"]), lambda v: v < TARGET_RSS_MB
        ),
        "peak_rss_under_150mb_latency": _check(
            _worst_muninet(memory["latency"]), lambda v: v < TARGET_RSS_MB
        ),
    }


def _check(value: float | None, ok: Callable[[float], bool]) -> dict[str, Any]:
    return {"value": value, "met": None if value is None else ok(value)}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


THROUGHPUT_HEADERS = (
    *("server", "round", "msg/s", "vs postfix", "seconds", "accept msg/s"),
    *("CPU ms/msg", "peak RSS MB", "peak PSS MB", "procs"),
)
LATENCY_HEADERS = (
    *("server", "idle p50", "idle p99", "load n", "load p50", "load p99", "p99 ratio"),
    *("large msgs", "peak RSS MB", "peak PSS MB"),
)


def throughput_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    postfix = {r["round"]: r["msg_per_s"] for r in ok(results) if r["server"] == Postfix.label}
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["server"], str(r["round"]), "FAILED", *[""] * 7])
            continue
        m = r["memory"]
        same_round = postfix.get(r["round"]) if r["server"] != Postfix.label else None
        ratio = r["msg_per_s"] / same_round if same_round else None
        rows.append(
            [
                r["server"],
                str(r["round"]),
                f"{r['msg_per_s']:.0f}",
                f"{ratio:.2f}x" if ratio is not None else "-",
                f"{r['seconds']:.2f}",
                f"{r['accept_msg_per_s']:.0f}",
                f"{r['cpu_ms_per_msg']:.2f}",
                f"{m['hwm_mb']:.0f}",
                f"{m['pss_mb']:.0f}",
                str(m["processes"]),
            ]
        )
    return rows


def latency_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["server"], "FAILED", *[""] * 8])
            continue
        rows.append(
            [
                r["server"],
                f"{r['idle']['p50_ms']:.1f}",
                f"{r['idle']['p99_ms']:.1f}",
                str(r["loaded"]["count"]),
                f"{r['loaded']['p50_ms']:.1f}",
                f"{r['loaded']['p99_ms']:.1f}",
                f"{r['p99_ratio']:.2f}x",
                f"{r['large']['accepted']} ({r['large']['mb_per_s']:.0f} MB/s)",
                f"{r['memory']['hwm_mb']:.0f}",
                f"{r['memory']['pss_mb']:.0f}",
            ]
        )
    return rows


FILTER_HEADERS = (
    *("server", "round", "msg/s", "on/off", "p50 ms", "p99 ms", "text p99", "attach p99"),
    *("250", "554", "other", "CPU ms/msg", "filters CPU ms/msg", "peak RSS MB"),
)


def filter_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    off = {(r["round"], r["workers"]): r["msg_per_s"] for r in ok(results) if not r["filters"]}
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["server"], str(r["round"]), "FAILED", *[""] * 11])
            continue
        base = off.get((r["round"], r["workers"])) if r["filters"] else None
        codes: dict[str, int] = {}
        for per_kind in r["codes"].values():
            for code, count in per_kind.items():
                codes[code] = codes.get(code, 0) + count
        other = sum(n for code, n in codes.items() if code not in {"250", "554"})
        by_kind = r["latency_by_kind"]
        rows.append(
            [
                r["server"],
                str(r["round"]),
                f"{r['msg_per_s']:.0f}",
                f"{r['msg_per_s'] / base:.2f}x" if base else "-",
                f"{r['latency']['p50_ms']:.1f}",
                f"{r['latency']['p99_ms']:.1f}",
                f"{by_kind['text']['p99_ms']:.1f}" if "text" in by_kind else "-",
                f"{by_kind['attachment']['p99_ms']:.1f}" if "attachment" in by_kind else "-",
                str(codes.get("250", 0)),
                str(codes.get("554", 0)),
                str(other + r["client_errors"]),
                f"{r['cpu_ms_per_msg']:.2f}",
                f"{r['filters_cpu_ms_per_msg']:.2f}",
                f"{r['memory']['hwm_mb']:.0f}",
            ]
        )
    return rows


def filter_verdicts(results: list[dict[str, Any]]) -> list[str]:
    """What the delivered mail of each filtered run says about the filters."""
    lines = []
    for r in ok(results):
        if not r["filters"]:
            continue
        found = r["delivered_headers"]
        av = ", ".join(f"{value!r} x{n}" for value, n in found["antivirus"].items())
        spam = ", ".join(f"{value} x{n}" for value, n in found["spam_status"].items())
        lines.append(
            f"  {r['server']}, round {r['round']}: X-Muninet-Antivirus {av}; X-Spam-Status {spam}"
        )
    return lines


def median_line(summary: dict[str, Any], rounds: int) -> str:
    ratios = summary["ratio_to_postfix"]
    parts = []
    for label, rate in summary["msg_per_s"].items():
        ratio = f" ({ratios[label]:.2f}x Postfix)" if label in ratios else ""
        parts.append(f"{label} {rate:.0f}{ratio}")
    return f"median msg/s over {rounds} rounds: " + ", ".join(parts)


def report(results: dict[str, Any], opts: Options) -> str:
    summary = results["summary"]
    out: list[str] = []
    if results["throughput"]:
        out += [
            "",
            f"== Scenario 1: durable throughput, smtp-source -s {opts.sessions} "
            f"-m {opts.messages} -l {opts.message_size}, end to end into Maildir/new",
            table(
                THROUGHPUT_HEADERS,
                throughput_rows(results["throughput"]),
            ),
        ]
        if opts.repeat > 1:
            out.append(median_line(summary, opts.repeat))
    if results["latency"]:
        out += [
            "",
            f"== Scenario 2: {opts.probes} x {opts.probe_size} B, one started every "
            f"{opts.probe_interval:g} s, connect to 250 (ms), idle vs while "
            f"{opts.large_clients} sessions upload {opts.large_size // MIB} MB messages",
            table(
                LATENCY_HEADERS,
                latency_rows(results["latency"]),
            ),
        ]
    if results["filters"]:
        out += [
            "",
            f"== Scenario 3: {opts.mix_messages} messages (80% 5 KB text, 15% 32 KB CSV "
            f"attachment, 5% EICAR), {opts.sessions} sessions, connect to reply after DATA, "
            "filters (clamd + rspamd) off vs on",
            table(FILTER_HEADERS, filter_rows(results["filters"])),
            "delivered mail of the filtered runs:",
            *filter_verdicts(results["filters"]),
        ]
        for workers, f in summary["filters"].items():
            out.append(
                f"median over {opts.repeat} round(s), {workers} worker(s): "
                f"off {f['msg_per_s_off']:.0f} msg/s, on {f['msg_per_s_on']:.0f} msg/s "
                f"= {f['ratio_on_off']:.2f}x; p99 {f['p99_ms_off']:.1f} -> {f['p99_ms_on']:.1f} ms"
            )
    out += ["", "== Targets (issues 3 and 5)"]
    names = {
        "throughput_at_least_postfix": "throughput >= Postfix (best muninet / Postfix)",
        "throughput_aim_1_5x": "aim: throughput >= 1.5x Postfix",
        "p99_under_load_within_2x": "small-message p99 under load <= 2x idle (worst)",
        "peak_rss_under_150mb_throughput": "muninet peak RSS < 150 MB, scenario 1 (worst, MB)",
        "peak_rss_under_150mb_latency": "muninet peak RSS < 150 MB, scenario 2 (worst, MB)",
        "filtered_at_least_half": "filters on >= 0.5x off, scenario 3 (worst on/off)",
    }
    for key, text in names.items():
        check = summary["targets"][key]
        verdict = {True: "met", False: "MISSED", None: "not measured"}[check["met"]]
        out.append(f"  {text:<52} {check['value']!s:>8}  {verdict}")
    return "\n".join(out)


# -- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def workdir(opts: Options) -> Iterator[Path]:
    if opts.workdir is not None:
        opts.workdir.mkdir(parents=True, exist_ok=True)
        path = opts.workdir.resolve()
    else:  # /var/tmp: a real disk (fsync means something), unlike a tmpfs /tmp
        path = Path(tempfile.mkdtemp(prefix="muninet-bench-", dir="/var/tmp"))
    path.chmod(0o755)  # Postfix's daemons and virtual(8) run as other users
    try:
        yield path
    finally:
        if opts.keep_workdir:
            say(f"scratch directory kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: servers get stopped


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if not MUNINET.exists():
        say(f"{MUNINET} not found: run scripts/setup first")
        return 2
    try:
        with workdir(opts) as work:
            results = run_all(opts, work)
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    say(report(results, opts))
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    opts.json_path.write_text(json.dumps(results, indent=2) + "\n")
    say(f"\nresults written to {opts.json_path}")
    runs = [*results["throughput"], *results["latency"], *results["filters"]]
    failed = [r for r in runs if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
