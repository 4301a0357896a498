#!/usr/bin/env python3
"""clamd client cost per scan: a new connection per scan against pooled clamd sessions.

`.venv/bin/python bench/clamd_client.py [--scans N] [--rounds R] [--parallel P]` starts
muninet's own `Clamd` (rendered configuration, the one-signature EICAR database of
the filter benchmark) in a scratch directory and, in this one process, scans the
filter benchmark's 5 KB text letter N times per run with muninet's `ClamdClient`:

- `new connection`: `sessions=0`, a connect, a zINSTREAM and a close per scan;
- `session`: the default, pooled `zIDSESSION` sessions (one per scan in flight).

Each mode runs one at a time and with P scans in flight, R rounds, the order of the
modes reversed every other round. Reported per scan (medians over the rounds): wall
time, this process's CPU (the client: Python, the event loop, the socket calls) and
clamd's CPU (from /proc). The client CPU is what the SMTP worker pays per message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from filter_stack import EICAR, write_signatures
from smtp_mix import text_message

from mailhost.filter_daemons import Clamd, clamd_binary
from mailhost.filters.clamav import ClamdClient
from provisioning.settings import load_settings

MODES = {"new connection": 0, "session": 8}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scan_loop(client: ClamdClient, data: bytes, scans: int, parallel: int) -> None:
    async def worker(count: int) -> None:
        for _ in range(count):
            result = await client.instream(data)
            if result.virus is not None:
                raise SystemExit(f"unexpected virus {result.virus}")

    share, extra = divmod(scans, parallel)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(parallel)))


def measure(
    socket_path: str, clamd_pid: int, sessions: int, scans: int, parallel: int
) -> dict[str, float]:
    async def go() -> tuple[float, float, float, int]:
        client = ClamdClient(socket_path, timeout=30, sessions=sessions)
        await scan_loop(client, text_message(), 50, parallel)  # warm-up: sessions open
        clamd_before, cpu_before = cpu_seconds(clamd_pid), time.process_time()
        began = time.perf_counter()
        await scan_loop(client, text_message(), scans, parallel)
        wall = time.perf_counter() - began
        cpu, clamd = time.process_time() - cpu_before, cpu_seconds(clamd_pid) - clamd_before
        opened = client.connections
        await client.aclose()
        return wall, cpu, clamd, opened

    wall, cpu, clamd, opened = asyncio.run(go())
    return {
        "wall_ms": 1000 * wall / scans,
        "client_cpu_ms": 1000 * cpu / scans,
        "clamd_cpu_ms": 1000 * clamd / scans,
        "scans_per_s": scans / wall,
        "connections": opened,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=5000, help="scans per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs per mode and parallelism")
    parser.add_argument("--parallel", type=int, default=8, help="scans in flight (second run)")
    opts = parser.parse_args(argv)
    if clamd_binary() is None:
        print("clamd (clamav-daemon) is not installed", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="muninet-clamd-bench-", dir="/var/tmp"))
    root.chmod(0o711)  # clamd runs as clamav when started by root
    settings = load_settings(
        {
            "MUNINET_PATHS__STATE_DIR": str(root / "state"),
            "MUNINET_ANTIVIRUS__DATABASE_DIR": str(root / "signatures"),
            "MUNINET_LOGGING__LEVEL": "WARNING",
        }
    )
    write_signatures(Path(settings.antivirus.database_dir))
    clamd = Clamd(settings)
    try:
        files = clamd.start(timeout=60)
        assert clamd.process is not None
        pid, socket_path = clamd.process.pid, str(files.socket)
        check = ClamdClient(socket_path, timeout=30)
        if asyncio.run(check.instream(EICAR)).virus is None:
            print("clamd did not find EICAR", file=sys.stderr)
            return 1
        print(f"load average before: {os.getloadavg()[0]:.2f}; 5 KB message, {opts.scans} scans")
        print(
            f"{'mode':<16} {'in flight':>9} {'scans/s':>8} {'wall ms':>8} "
            f"{'client CPU ms':>13} {'clamd CPU ms':>12} {'connections':>11}"
        )
        for parallel in (1, opts.parallel):
            runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
            for round_ in range(opts.rounds):
                order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
                for mode in order:
                    runs[mode].append(measure(socket_path, pid, MODES[mode], opts.scans, parallel))
            for mode, results in runs.items():
                med = {key: statistics.median(r[key] for r in results) for key in results[0]}
                print(
                    f"{mode:<16} {parallel:>9} {med['scans_per_s']:>8.0f} {med['wall_ms']:>8.3f} "
                    f"{med['client_cpu_ms']:>13.3f} {med['clamd_cpu_ms']:>12.3f} "
                    f"{med['connections']:>11.0f}"
                )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        clamd.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
