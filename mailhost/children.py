"""Daemons `muninet run` starts as its children: one way to know and end them."""

from __future__ import annotations

import logging
import subprocess

log = logging.getLogger(__name__)


class ChildProcess:
    """A daemon we started; stopped with SIGTERM, then SIGKILL if it will not go."""

    what = "daemon"
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM: killed", self.what, process.pid)
            process.kill()
            process.wait()
