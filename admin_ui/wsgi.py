"""The WSGI entry point for gunicorn: `gunicorn admin_ui.wsgi:app`."""

from admin_ui.app import create_app

app = create_app()
