"""The running mail host: SMTP servers, filters, delivery, queue and daemon supervision.

Uses `provisioning`; never imports `admin_ui`.
"""
