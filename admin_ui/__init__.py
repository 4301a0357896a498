"""The appliance's web face (Flask): client autoconfiguration now, the admin and JSON API next.

Uses `provisioning` services only; talks to the mail engine through the database.
"""

from admin_ui.app import create_app

__all__ = ["create_app"]
