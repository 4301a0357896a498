"""Admin users (superadmins and member admins), their API tokens and second factor.

The second factor is TOTP (RFC 6238, 30-second steps, 6 digits): enrolment stores a
new secret, which guards logins only after the admin confirmed one code from the app.
A code is accepted one step early or late (clock drift) and only once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from datetime import UTC, datetime

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from provisioning.errors import Conflict, NotFound, ValidationError
from provisioning.models import AdminUser, ApiToken, utcnow
from provisioning.services import members
from provisioning.services.context import ServiceContext

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
TOKEN_PREFIX = "mnt"  # noqa: S105 - a marker, not a secret


def get(session: Session, username: str) -> AdminUser:
    admin = session.scalars(
        select(AdminUser).where(AdminUser.username == username.strip().lower())
    ).one_or_none()
    if admin is None:
        raise NotFound("no admin %(username)r", username=username)
    return admin


def list_admins(session: Session) -> list[AdminUser]:
    return list(
        session.scalars(
            select(AdminUser).options(joinedload(AdminUser.member)).order_by(AdminUser.username)
        )
    )


def create(
    ctx: ServiceContext, username: str, password: str, *, member_slug: str | None = None
) -> AdminUser:
    """A superadmin, or with member_slug an admin who may manage only that member."""
    username = username.strip().lower()
    if not _USERNAME.match(username):
        raise ValidationError(
            "invalid admin username %(username)r: 2-64 lower-case letters, digits, '.', "
            "'_', '-' or '@'",
            username=username,
        )
    if ctx.session.scalar(select(AdminUser.id).where(AdminUser.username == username)):
        raise Conflict("admin %(username)r already exists", username=username)
    member = members.get(ctx.session, member_slug) if member_slug else None
    admin = AdminUser(username=username, password_hash=ctx.hasher.hash(password), member=member)
    ctx.session.add(admin)
    ctx.session.flush()
    ctx.audit(
        "admin.create",
        username,
        role="member-admin" if member else "superadmin",
        member=member.slug if member else None,
    )
    return admin


def set_enabled(ctx: ServiceContext, username: str, enabled: bool) -> AdminUser:
    """Disable (ends their sessions and tokens) or enable again; never the last superadmin."""
    admin = get(ctx.session, username)
    if admin.enabled == enabled:
        return admin
    if not enabled and admin.is_superadmin and _other_superadmins(ctx, admin) == 0:
        raise Conflict("%(admin)r is the last enabled superadmin", admin=admin.username)
    admin.enabled = enabled
    ctx.audit("admin.enable" if enabled else "admin.disable", admin.username)
    return admin


def _other_superadmins(ctx: ServiceContext, admin: AdminUser) -> int:
    others = ctx.session.scalars(
        select(AdminUser.id).where(
            AdminUser.member_id.is_(None), AdminUser.enabled.is_(True), AdminUser.id != admin.id
        )
    )
    return len(list(others))


def set_password(ctx: ServiceContext, username: str, password: str) -> AdminUser:
    """A new password (policy-checked); the old one stops working at once."""
    admin = get(ctx.session, username)
    admin.password_hash = ctx.hasher.hash(password)
    ctx.audit("admin.password", admin.username)
    return admin


def authenticate(ctx: ServiceContext, username: str, password: str) -> AdminUser | None:
    """The admin if the password is right and the account is enabled; upgrades old hashes."""
    try:
        admin = get(ctx.session, username)
    except NotFound:
        return None
    result = ctx.hasher.verify(password, admin.password_hash)
    if not result.ok or not admin.enabled:
        return None
    if result.new_hash is not None:
        admin.password_hash = result.new_hash
    admin.last_login_at = utcnow()
    return admin


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(ctx: ServiceContext, username: str, name: str = "") -> tuple[ApiToken, str]:
    """A new API token for an admin; the clear token is returned once and never stored."""
    admin = get(ctx.session, username)
    if len(name) > 100:
        raise ValidationError("token name is longer than 100 characters")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = ApiToken(
        admin=admin,
        name=name.strip(),
        prefix=prefix,
        secret_hash=_digest(secret),
        created_at=utcnow(),
    )
    ctx.session.add(token)
    ctx.session.flush()
    ctx.audit("token.create", f"{admin.username}/{prefix}", name=token.name)
    return token, f"{TOKEN_PREFIX}_{prefix}_{secret}"


def list_tokens(session: Session, username: str | None = None) -> list[ApiToken]:
    """Every token (revoked ones too, for the record), newest first; or one admin's."""
    query = select(ApiToken).options(joinedload(ApiToken.admin)).join(ApiToken.admin)
    if username is not None:
        query = query.where(AdminUser.username == username.strip().lower())
    return list(session.scalars(query.order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def verify_token(session: Session, presented: str) -> ApiToken | None:
    """The live token matching a presented bearer string, or None."""
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    token = session.scalars(select(ApiToken).where(ApiToken.prefix == parts[1])).one_or_none()
    if token is None or token.revoked_at is not None or not token.admin.enabled:
        return None
    if not hmac.compare_digest(token.secret_hash, _digest(parts[2])):
        return None
    return token


def revoke_token(ctx: ServiceContext, prefix: str) -> ApiToken:
    token = ctx.session.scalars(select(ApiToken).where(ApiToken.prefix == prefix)).one_or_none()
    if token is None:
        raise NotFound("no token %(prefix)r", prefix=prefix)
    if token.revoked_at is not None:
        raise ValidationError("token %(prefix)r is already revoked", prefix=prefix)
    token.revoked_at = utcnow()
    ctx.audit("token.revoke", f"{token.admin.username}/{prefix}")
    return token


# -- second factor (TOTP) ---------------------------------------------------------------------

TOTP_ISSUER = "muninet"
_CODE = re.compile(r"^[0-9]{6}$")


def totp_begin(ctx: ServiceContext, username: str) -> str:
    """Store a new, not yet active secret and return it (base32) for the authenticator app."""
    admin = get(ctx.session, username)
    if admin.totp_enabled:
        raise Conflict(
            "%(admin)r already uses a second factor; disable it first", admin=admin.username
        )
    admin.totp_secret = pyotp.random_base32()
    admin.totp_last_step = None
    ctx.audit("admin.totp-enrol", admin.username)
    return admin.totp_secret


def totp_uri(admin: AdminUser, issuer: str = TOTP_ISSUER) -> str:
    """The otpauth:// URI an authenticator app reads (from the QR code or typed in)."""
    if not admin.totp_secret:
        raise ValidationError("%(admin)r has no second factor secret", admin=admin.username)
    return pyotp.TOTP(admin.totp_secret).provisioning_uri(name=admin.username, issuer_name=issuer)


def _accept(admin: AdminUser, code: str, now: float | None) -> bool:
    """True for a current code not used before; remembers its time step."""
    code = code.strip().replace(" ", "")
    if not admin.totp_secret or not _CODE.match(code):
        return False
    totp = pyotp.TOTP(admin.totp_secret)
    when = time.time() if now is None else now
    step = totp.timecode(_moment(when))
    for candidate in (step, step - 1, step + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            if admin.totp_last_step is not None and candidate <= admin.totp_last_step:
                return False  # replayed, or older than the last accepted code
            admin.totp_last_step = candidate
            return True
    return False


def _moment(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def totp_confirm(
    ctx: ServiceContext, username: str, code: str, *, now: float | None = None
) -> AdminUser:
    """Switch the second factor on once the app shows a right code (ValidationError if not)."""
    admin = get(ctx.session, username)
    if admin.totp_enabled:
        raise Conflict("%(admin)r already uses a second factor", admin=admin.username)
    if not admin.totp_secret:
        raise ValidationError("start the enrolment first")
    if not _accept(admin, code, now):
        raise ValidationError("wrong code: check the time on the phone and try again")
    admin.totp_enabled = True
    ctx.audit("admin.totp-enable", admin.username)
    return admin


def totp_check(ctx: ServiceContext, username: str, code: str, *, now: float | None = None) -> bool:
    """At login: the code of an admin with the second factor on (False if wrong or reused)."""
    try:
        admin = get(ctx.session, username)
    except NotFound:
        return False
    return admin.enabled and admin.totp_enabled and _accept(admin, code, now)


def totp_disable(
    ctx: ServiceContext, username: str, code: str, *, now: float | None = None
) -> AdminUser:
    """Switch the second factor off, proven with a current code (ValidationError if wrong)."""
    admin = get(ctx.session, username)
    if not admin.totp_enabled:
        raise ValidationError("%(admin)r does not use a second factor", admin=admin.username)
    if not _accept(admin, code, now):
        raise ValidationError("wrong code: check the time on the phone and try again")
    _clear_totp(admin)
    ctx.audit("admin.totp-disable", admin.username)
    return admin


def totp_reset(ctx: ServiceContext, username: str) -> AdminUser:
    """The escape hatch (lost phone): off without a code, for the CLI on the server."""
    admin = get(ctx.session, username)
    _clear_totp(admin)
    ctx.audit("admin.totp-reset", admin.username)
    return admin


def _clear_totp(admin: AdminUser) -> None:
    admin.totp_secret = None
    admin.totp_enabled = False
    admin.totp_last_step = None
