"""muninet's provisioning core: models, services, settings, password hashing and the CLI root.

This package is the bottom of the house: it imports no Flask, no aiosmtpd and no
`mailhost`. The faces (CLI, web admin, SMTP servers) call its services.
"""
