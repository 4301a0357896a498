"""Plain-dict views of the models, the same for the CLI's --json and the JSON API."""

from __future__ import annotations

from typing import Any

from provisioning.models import AdminUser, Alias, ApiToken, Domain, Mailbox, MailRules, Member
from provisioning.passwords import dovecot_scheme
from provisioning.services.members import Usage


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def member(m: Member, usage: Usage | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "slug": m.slug,
        "name": m.name,
        "kind": m.kind.value,
        "status": m.status.value,
        "status_reason": m.status_reason,
        "contact": {"name": m.contact_name, "email": m.contact_email, "phone": m.contact_phone},
        "contract": {
            "number": m.contract_number,
            "start": _iso(m.contract_start),
            "end": _iso(m.contract_end),
        },
        "package": {
            "max_mailboxes": m.max_mailboxes,
            "mail_quota_bytes": m.mail_quota_bytes,
            "max_lines": m.max_lines,
        },
        "created_at": _iso(m.created_at),
    }
    if usage is not None:
        data["usage"] = {
            "mailboxes": usage.mailboxes,
            "quota_allocated_bytes": usage.quota_allocated,
            "aliases": usage.aliases,
            "domains": usage.domains,
            "lines": usage.lines,
        }
    return data


def domain(d: Domain, mailboxes: int | None = None, aliases: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": d.name,
        "ascii_name": d.ascii_name,
        "shared": d.is_shared,
        "member": d.member.slug if d.member else None,
        "utf8_local_parts": d.utf8_local_parts,
        # The domain's own content filter settings; null: the global value applies.
        "filters": {
            "spam_add_header_score": d.spam_add_header_score,
            "spam_reject_score": d.spam_reject_score,
            "virus_action": d.virus_action.value if d.virus_action is not None else None,
        },
        "created_at": _iso(d.created_at),
    }
    if mailboxes is not None:
        data["mailboxes"] = mailboxes
    if aliases is not None:
        data["aliases"] = aliases
    return data


def mailbox(mb: Mailbox) -> dict[str, Any]:
    return {
        "address": mb.display_address,
        "login": mb.address,
        "member": mb.member.slug,
        "display_name": mb.display_name,
        "quota_bytes": mb.quota_bytes,
        "enabled": mb.enabled,
        "password_scheme": dovecot_scheme(mb.password_hash),
        "created_at": _iso(mb.created_at),
        "updated_at": _iso(mb.updated_at),
    }


def mail_rules(rules: MailRules | None) -> dict[str, Any]:
    """A mailbox's vacation reply and forwarding (defaults when never set)."""
    if rules is None:
        return {"vacation": None, "forward_to": [], "forward_keep_copy": True}
    vacation = None
    if rules.vacation_enabled:
        vacation = {
            "subject": rules.vacation_subject,
            "message": rules.vacation_body,
            "days": rules.vacation_days,
            "from": rules.vacation_start.isoformat() if rules.vacation_start else None,
            "until": rules.vacation_end.isoformat() if rules.vacation_end else None,
        }
    return {
        "vacation": vacation,
        "forward_to": list(rules.forward_to),
        "forward_keep_copy": rules.forward_keep_copy,
    }


def alias(a: Alias) -> dict[str, Any]:
    return {
        "source": a.display_address,
        "catch_all": a.is_catch_all,
        "member": a.member.slug,
        "destinations": [d.address for d in a.destinations],
        "enabled": a.enabled,
        "created_at": _iso(a.created_at),
    }


def admin(a: AdminUser) -> dict[str, Any]:
    return {
        "username": a.username,
        "role": "superadmin" if a.is_superadmin else "member-admin",
        "member": a.member.slug if a.member else None,
        "enabled": a.enabled,
        "last_login_at": _iso(a.last_login_at),
        "created_at": _iso(a.created_at),
    }


def token(t: ApiToken) -> dict[str, Any]:
    return {
        "prefix": t.prefix,
        "admin": t.admin.username,
        "name": t.name,
        "created_at": _iso(t.created_at),
        "last_used_at": _iso(t.last_used_at),
        "revoked_at": _iso(t.revoked_at),
    }
