"""What a request needs from the app: settings and the database (typed accessors)."""

from __future__ import annotations

from flask import current_app

from provisioning.db import Database
from provisioning.settings import Settings


def settings() -> Settings:
    value = current_app.config["MUNINET_SETTINGS"]
    assert isinstance(value, Settings)
    return value


def database() -> Database:
    value = current_app.extensions["muninet_db"]
    assert isinstance(value, Database)
    return value
