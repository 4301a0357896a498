"""The web admin and JSON API (Flask). Uses `provisioning` services only."""
