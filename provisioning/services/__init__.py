"""Provisioning services: every change to members, domains, mailboxes, aliases and admins.

Each function validates its input, enforces the member's package, writes an audit
event, and works inside the caller's transaction (a `ServiceContext`), raising a
typed `provisioning.errors.MuninetError` on refusal so that nothing is half-written.
"""
