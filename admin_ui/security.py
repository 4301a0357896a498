"""The web admin's security base: secret key, cookies, headers, proxies and login rate limits.

Settings the admin needs beyond `Settings` come from the environment (never `MUNINET_*`,
which `load_settings` reserves for its own sections):

- `ADMIN_UI_SECRET_KEY`: signs session cookies; without it a random key is made once and
  kept in `<state_dir>/admin-secret-key` (mode 0600), shared by every worker.
- `ADMIN_UI_INSECURE_COOKIES=1`: drop the cookie's Secure flag (plain-http development only).
- `ADMIN_UI_TRUSTED_PROXIES=<n>`: trust X-Forwarded-For/-Proto from n reverse proxies.
- `ADMIN_UI_SESSION_IDLE_MINUTES` (30) and `ADMIN_UI_SESSION_HOURS` (12): session expiry.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response, request

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


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _number(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def secret_key(state_dir: Path, environ: Mapping[str, str]) -> str:
    """The configured key, or the one kept in the state directory (made once, mode 0600)."""
    if configured := environ.get("ADMIN_UI_SECRET_KEY", "").strip():
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


def configure(app: Flask, state_dir: Path, environ: Mapping[str, str] | None = None) -> None:
    """Secret key, cookie flags, session lifetime, proxy trust and the response headers."""
    environ = os.environ if environ is None else environ
    secure = not _flag(environ, "ADMIN_UI_INSECURE_COOKIES")
    app.config.update(
        SECRET_KEY=secret_key(state_dir, environ),
        SESSION_COOKIE_NAME="__Host-muninet" if secure else "muninet",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=_number(environ, "ADMIN_UI_SESSION_HOURS", 12)),
        ADMIN_SESSION_IDLE=timedelta(minutes=_number(environ, "ADMIN_UI_SESSION_IDLE_MINUTES", 30)),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session, which expires
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    if proxies := _number(environ, "ADMIN_UI_TRUSTED_PROXIES", 0):
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
    """At most `limit` events per key in the last `window` seconds (one process's memory).

    Each gunicorn worker keeps its own counts, so the effective limit is up to
    `limit x workers`; still a hard cap on guessing.
    """

    MAX_KEYS = 50_000

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _prune(self, key: str, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def blocked(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            events = self._prune(key, now)
            return events is not None and len(events) >= self.limit

    def hit(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._events) >= self.MAX_KEYS:
                for old in list(self._events):
                    self._prune(old, now)
                while len(self._events) >= self.MAX_KEYS:  # a flood: forget the oldest keys
                    del self._events[next(iter(self._events))]
            self._events.setdefault(key, deque()).append(now)

    def reset(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)
