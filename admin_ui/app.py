"""The Flask application factory."""

from __future__ import annotations

from flask import Flask

from provisioning.db import Database
from provisioning.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """One app per process; its database handle is shared by the requests of that process."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["MUNINET_SETTINGS"] = settings
    database = Database.from_settings(settings)
    database.require_current()
    app.extensions["muninet_db"] = database

    from admin_ui.blueprints.autoconfig import autoconfig

    app.register_blueprint(autoconfig)
    return app
