"""The Flask application factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, render_template
from flask_babel import get_locale
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from provisioning.db import Database
from provisioning.errors import NotFound
from provisioning.settings import Settings, load_settings


def create_app(
    settings: Settings | None = None,
    *,
    config: Mapping[str, Any] | None = None,
) -> Flask:
    """One app per process; its database handle is shared by the requests of that process.

    The admin's own settings are the `[admin]` section; `config` overrides Flask
    settings (tests).
    """
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["MUNINET_SETTINGS"] = settings
    database = Database.from_settings(settings)
    database.require_current()
    app.extensions["muninet_db"] = database

    from admin_ui import i18n, security
    from admin_ui.auth import load_current_admin
    from admin_ui.blueprints.account import account
    from admin_ui.blueprints.admin import admin
    from admin_ui.blueprints.api import api, is_api_request, problem_response
    from admin_ui.blueprints.autoconfig import autoconfig
    from admin_ui.blueprints.directory import directory
    from admin_ui.blueprints.network import network
    from admin_ui.blueprints.operations import operations
    from admin_ui.blueprints.selfservice import selfservice
    from admin_ui.blueprints.sheets import sheets

    security.configure(app, settings)
    i18n.init_app(app, settings.state_dir)
    app.config.update(config or {})
    csrf = CSRFProtect(app)
    csrf.exempt(autoconfig)  # mail clients post autodiscover requests with no session
    csrf.exempt(api)  # bearer tokens, no cookies

    app.register_blueprint(autoconfig)
    app.register_blueprint(account)
    app.register_blueprint(admin)
    app.register_blueprint(api)
    for blueprint in (directory, network, operations, selfservice, sheets):
        app.register_blueprint(blueprint)
    app.before_request(load_current_admin)
    app.jinja_env.globals["current_language"] = lambda: str(get_locale() or i18n.DEFAULT)

    def _error(status: int) -> tuple[str, int]:
        return render_template("error.html", status=status), status

    @app.errorhandler(404)
    @app.errorhandler(NotFound)
    def _not_found(_error_: Exception) -> tuple[str, int] | Response:
        if is_api_request():  # no route under /api/v1: problem JSON, not the HTML page
            return problem_response(_error_)
        return _error(404)

    @app.errorhandler(405)
    def _not_allowed(error_: HTTPException) -> HTTPException | Response:
        return problem_response(error_) if is_api_request() else error_

    @app.errorhandler(CSRFError)
    def _csrf(_error_: Exception) -> tuple[str, int]:
        return _error(400)

    return app
