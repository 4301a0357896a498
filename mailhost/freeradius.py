"""FreeRADIUS as a child of `muninet run`, from the configuration muninet renders.

Like `mailhost.supervisor.Dovecot`: `freeradius -f -d <state_dir>/freeradius` runs
in the foreground as our child and lives and dies with us. FreeRADIUS reads its
clients (the `nas` table) only at start, so `reload_if_nas_changed()`, called
periodically by the supervisor loop, restarts it when the NASes have changed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

from mailhost.children import ChildProcess
from provisioning.render_radius import RadiusFiles, nas_fingerprint, render_radius
from provisioning.settings import Settings

log = logging.getLogger(__name__)
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"
READY = b"Ready to process requests"


def freeradius_binary() -> str | None:
    return shutil.which("freeradius", path=SBIN) or shutil.which("radiusd", path=SBIN)


def _tail(path: Path, offset: int, size: int = 3000) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")[-size:]


class FreeRadius(ChildProcess):
    """FreeRADIUS in the foreground (`freeradius -f`) as our child process."""

    what = "FreeRADIUS"

    def __init__(self, settings: Settings, *, reject_delay: float = 1) -> None:
        self.settings = settings
        self.reject_delay = reject_delay
        self.files: RadiusFiles | None = None

    def check_config(self) -> None:
        """Render and let FreeRADIUS check the configuration (`freeradius -C`)."""
        binary = freeradius_binary()
        if binary is None:
            raise FileNotFoundError("freeradius")
        files = render_radius(self.settings, reject_delay=self.reject_delay)
        result = subprocess.run(  # noqa: S603
            [binary, "-C", "-d", str(files.raddb)], capture_output=True, check=False
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")[-3000:]
            raise RuntimeError(f"FreeRADIUS refuses its configuration:\n{output}")

    def start(self, timeout: float = 15) -> RadiusFiles:
        binary = freeradius_binary()
        if binary is None:
            raise FileNotFoundError("freeradius")
        files = render_radius(self.settings, reject_delay=self.reject_delay)
        self.files = files
        offset = files.log.stat().st_size if files.log.exists() else 0
        with files.log.open("ab") as output:
            self.process = subprocess.Popen(  # noqa: S603
                [binary, "-f", "-d", str(files.raddb)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while READY not in _tail(files.log, offset, 1 << 20).encode():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"FreeRADIUS did not start; its log ends:\n{_tail(files.log, offset)}"
                )
            time.sleep(0.05)
        log.info(
            "FreeRADIUS (pid %d) serving RADIUS on %s:%d (auth) and %d (accounting)",
            self.process.pid,
            self.settings.listen.address,
            self.settings.listen.radius_auth_port,
            self.settings.listen.radius_acct_port,
        )
        return files

    def restart(self, timeout: float = 15) -> RadiusFiles:
        self.stop(timeout)
        return self.start(timeout)

    def reload_if_nas_changed(self) -> bool:
        """Restart when a NAS was added, removed or changed since the start; True if so."""
        if self.files is None or not self.running:
            return False
        if nas_fingerprint(self.settings) == self.files.nas_fingerprint:
            return False
        log.info("NAS list changed: restarting FreeRADIUS to load its clients")
        self.restart()
        return True
