"""The web admin's security base: secret key, cookies, headers, proxies and login rate limits.

Its settings are the `[admin]` section of muninet's settings (config/muninet.toml):
the secret key (else one made once in `<state_dir>/admin-secret-key`, mode 0600, shared by
every worker), the cookie's Secure flag, trusted reverse proxies and session expiry.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response, request

from provisioning.settings import Settings

SECRET_FILE = "admin-secret-key"  # noqa: S105 - a file name, not a secret

# No inline script or style anywhere: every page is served under this policy.
CSP = "; ".join(
    [
        "default-src 'none'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: Flask-WTF checks the Referer of HTTPS form posts.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def secret_key(state_dir: Path, configured: str) -> str:
    """The configured key, or the one kept in the state directory (made once, mode 0600)."""
    if configured := configured.strip():
        return configured
    path = state_dir / SECRET_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        temporary = state_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # atomic; a worker that loses the race reads the winner's
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds no usable secret key; delete it to make a new one")
    return key


def configure(app: Flask, settings: Settings) -> None:
    """Secret key, cookie flags, session lifetime, proxy trust and the response headers."""
    admin = settings.admin
    secure = not admin.insecure_cookies
    app.config.update(
        SECRET_KEY=secret_key(settings.state_dir, admin.secret_key),
        SESSION_COOKIE_NAME="__Host-muninet" if secure else "muninet",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=admin.session_hours),
        ADMIN_SESSION_IDLE=timedelta(minutes=admin.session_idle_minutes),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session, which expires
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    if proxies := admin.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if request.is_secure and app.config["SESSION_COOKIE_SECURE"]:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")
            response.vary.add("Accept-Language")
        return response


class SlidingWindow:
    """At most `limit` events per key in the last `window` seconds, shared by every worker.

    gunicorn runs several worker processes; counting in each one's memory would let an
    attacker multiply the limit by the number of workers. The events live in a small
    SQLite file in the state directory (WAL, mode 0600), which every worker of this host
    opens, whatever database muninet itself uses. `scope` separates the windows that share
    the file (per address, per admin account, per mailbox).
    """

    def __init__(self, path: Path, scope: str, limit: int, window: float) -> None:
        self.path = path
        self.scope = scope
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0

    def _db(self) -> sqlite3.Connection:
        """One connection per process (a connection must not cross a fork)."""
        if self._connection is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            connection = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("CREATE TABLE IF NOT EXISTS events (scope TEXT, key TEXT, at REAL)")
            connection.execute("CREATE INDEX IF NOT EXISTS events_key ON events (scope, key, at)")
            connection.commit()
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def blocked(self, key: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            (count,) = (
                self._db()
                .execute(
                    "SELECT count(*) FROM events WHERE scope = ? AND key = ? AND at > ?",
                    (self.scope, key, now - self.window),
                )
                .fetchone()
            )
        return bool(count >= self.limit)

    def hit(self, key: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            db = self._db()
            with db:  # one transaction: forget what slid out, then add the event
                db.execute(
                    "DELETE FROM events WHERE scope = ? AND at <= ?",
                    (self.scope, now - self.window),
                )
                db.execute(
                    "INSERT INTO events (scope, key, at) VALUES (?, ?, ?)", (self.scope, key, now)
                )

    def reset(self, key: str) -> None:
        with self._lock:
            db = self._db()
            with db:
                db.execute("DELETE FROM events WHERE scope = ? AND key = ?", (self.scope, key))


LIMITS_FILE = "admin-login-limits.sqlite"


def window(app: Flask, scope: str, limit: int, seconds: float) -> SlidingWindow:
    """The app's window for `scope`, made once per app on the shared limits file."""
    windows: dict[str, SlidingWindow] = app.extensions.setdefault("muninet_windows", {})
    if scope not in windows:
        settings: Settings = app.config["MUNINET_SETTINGS"]
        windows[scope] = SlidingWindow(settings.state_dir / LIMITS_FILE, scope, limit, seconds)
    return windows[scope]
