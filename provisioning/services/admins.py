"""Admin users (superadmins and member admins) and their API tokens."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

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
        raise NotFound(f"no admin {username!r}")
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
            f"invalid admin username {username!r}: 2-64 lower-case letters, digits, '.', '_', "
            "'-' or '@'"
        )
    if ctx.session.scalar(select(AdminUser.id).where(AdminUser.username == username)):
        raise Conflict(f"admin {username!r} already exists")
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
        raise NotFound(f"no token {prefix!r}")
    if token.revoked_at is not None:
        raise ValidationError(f"token {prefix!r} is already revoked")
    token.revoked_at = utcnow()
    ctx.audit("token.revoke", f"{token.admin.username}/{prefix}")
    return token
