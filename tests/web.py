"""Shared web-admin test helpers: a Browser (https, Referer, CSRF) and an app with two members.

Use with `pytest_plugins = ["web"]` and `from web import Browser, ...`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from admin_ui import create_app
from provisioning.models import AuditEvent
from provisioning.services import admins, domains, mailboxes, members
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings

Unit = Callable[[], AbstractContextManager[ServiceContext]]
PASSWORD = "correct horse battery"
SAME_FAILURE = "Wrong username or password."
BASE = "https://admin.example"


class Browser:
    """A test client that speaks https, sends a same-origin Referer and fills in CSRF tokens."""

    def __init__(self, app: Flask, address: str = "192.0.2.10") -> None:
        self.client: FlaskClient = app.test_client()
        self.address = address

    def _kw(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        headers = {"Referer": f"{BASE}/", **kwargs.pop("headers", {})}
        environ = {"REMOTE_ADDR": self.address, **kwargs.pop("environ_base", {})}
        return {"base_url": BASE, "headers": headers, "environ_base": environ, **kwargs}

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.client.get(path, **self._kw(kwargs))

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> TestResponse:
        return self.client.post(path, data=data, **self._kw(kwargs))

    def token(self, page: str = "/login") -> str:
        found = re.search(rb'name="csrf_token" value="([^"]+)"', self.get(page).data)
        assert found, page
        return found.group(1).decode()

    def submit(self, page: str, action: str, data: dict[str, str]) -> TestResponse:
        return self.post(action, {"csrf_token": self.token(page), **data})

    def login(self, username: str, password: str = PASSWORD) -> TestResponse:
        return self.submit("/login", "/login", {"username": username, "password": password})


@pytest.fixture
def app(settings: Settings, unit: Unit) -> Flask:
    with unit() as ctx:
        for slug, name in [("alfa", "Gmina Alfa"), ("beta", "Община Бета")]:
            members.create(ctx, slug, name, max_mailboxes=3, mail_quota=3 * 2**30)
            domains.create(ctx, f"{slug}.example", member_slug=slug)
            mailboxes.create(ctx, f"biuro@{slug}.example", slug, password=PASSWORD)
            admins.create(ctx, f"admin-{slug}", PASSWORD, member_slug=slug)
        admins.create(ctx, "root", PASSWORD)
    return create_app(settings)


@pytest.fixture
def browser(app: Flask) -> Browser:
    return Browser(app)


def messages(response: TestResponse) -> list[str]:
    return re.findall(r'<p class="flash [a-z]+">([^<]*)</p>', response.get_data(as_text=True))


def audit(unit: Unit, action: str) -> list[AuditEvent]:
    with unit() as ctx:
        return list(ctx.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
