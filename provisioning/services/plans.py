"""Service plans for dial-up and broadband subscribers, and the RADIUS attributes made from them.

A plan holds speeds, monthly caps, timeouts and session limits. Its reply
attributes for each NAS vendor are generated here, never typed by hand, into
`radius_plan_attributes`, in the same transaction as the plan change, so that
FreeRADIUS (which reads them by plan id) always sees a plan and its
attributes that agree:

| vendor   | attributes (download / upload)                                 |
|----------|----------------------------------------------------------------|
| mikrotik | `Mikrotik-Rate-Limit = "<up>/<down>"` (rx/tx seen from the NAS) |
| wispr    | `WISPr-Bandwidth-Max-Down`, `WISPr-Bandwidth-Max-Up` (bit/s)    |
| ascend   | `Ascend-Xmit-Rate` (to the user), `Ascend-Data-Rate` (from it)  |
| cisco    | `Cisco-AVPair += "lcp:interface-config#1=rate-limit output ..."` and `#2 ... input` |

Every NAS also gets `Service-Type`/`Framed-Protocol` (dial-up and PPPoE),
`Session-Timeout`, `Idle-Timeout`, `Port-Limit` and `Acct-Interim-Interval` as
the plan sets them. A throttling plan with a data cap has a second, "fairuse" set
of rate attributes that FreeRADIUS sends instead once the month's cap is used up.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning.errors import Conflict, NotFound, Term, ValidationError
from provisioning.models import CapAction, PlanAttribute, PlanKind, ServicePlan, Subscriber
from provisioning.services.context import ServiceContext

# How often NASes send interim accounting updates; sessions silent for twice this
# long are closed as stale.
INTERIM_INTERVAL = 300
MAX_SIMULTANEOUS = 32
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:bps|bit/s|b/s)?\s*$", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}
MAX_RATE = 100 * 1000**3  # 100 Gbit/s
MAX_TIMEOUT = 2**31 - 1


class Unset(enum.Enum):
    UNSET = enum.auto()


UNSET = Unset.UNSET


def parse_rate(text: str | int) -> int:
    """Bits per second from "2M", "512k", "1.5M", "1000000" (decimal units, as links are sold)."""
    if isinstance(text, int):
        value = text
    else:
        match = _RATE.match(text)
        if not match:
            raise ValidationError("not a rate: %(text)r (use e.g. 512k, 2M, 1G bit/s)", text=text)
        number, unit = match.groups()
        value = round(float(number) * _RATE_UNITS[unit.lower()])
    if value < 0 or value > MAX_RATE:
        raise ValidationError("rate out of range: %(text)r", text=text)
    return value


def format_rate(bps: int) -> str:
    """ "2M", "512k", "1500k": the short form MikroTik reads too ("0": unlimited)."""
    for unit, factor in (("G", 1000**3), ("M", 1000**2), ("k", 1000)):
        if bps >= factor and bps % factor == 0:
            return f"{bps // factor}{unit}"
    return str(bps)


def get(session: Session, name: str) -> ServicePlan:
    plan = session.scalars(
        select(ServicePlan).where(ServicePlan.name == name.strip().lower())
    ).one_or_none()
    if plan is None:
        raise NotFound("no plan %(name)r", name=name)
    return plan


def list_plans(session: Session) -> list[ServicePlan]:
    return list(session.scalars(select(ServicePlan).order_by(ServicePlan.name)))


def subscriber_counts(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(Subscriber.plan_id, func.count(Subscriber.id)).group_by(Subscriber.plan_id)
    ).all()
    return {plan_id: count for plan_id, count in rows}


@dataclass(frozen=True)
class Attribute:
    tier: str  # "all", "normal", "fairuse"
    vendor: str  # "" or a NasVendor value
    attribute: str
    op: str
    value: str


def _cisco_rate(direction: str, bps: int, position: int) -> str:
    # Cisco's recommended bursts: normal = 1.5 s of traffic in bytes, extended = 2x.
    normal = max(bps * 3 // 16, 8000)
    return (
        f"lcp:interface-config#{position}=rate-limit {direction} {bps} {normal} {2 * normal} "
        "conform-action transmit exceed-action drop"
    )


def _rate_attributes(tier: str, down: int, up: int) -> list[Attribute]:
    if down == 0 and up == 0:
        return []
    rows = [
        Attribute(
            tier, "mikrotik", "Mikrotik-Rate-Limit", ":=", f"{format_rate(up)}/{format_rate(down)}"
        )
    ]
    if down:
        rows += [
            Attribute(tier, "wispr", "WISPr-Bandwidth-Max-Down", ":=", str(down)),
            Attribute(tier, "ascend", "Ascend-Xmit-Rate", ":=", str(down)),
            Attribute(tier, "cisco", "Cisco-AVPair", "+=", _cisco_rate("output", down, 1)),
        ]
    if up:
        rows += [
            Attribute(tier, "wispr", "WISPr-Bandwidth-Max-Up", ":=", str(up)),
            Attribute(tier, "ascend", "Ascend-Data-Rate", ":=", str(up)),
            Attribute(tier, "cisco", "Cisco-AVPair", "+=", _cisco_rate("input", up, 2)),
        ]
    return rows


def reply_attributes(plan: ServicePlan) -> list[Attribute]:
    """The RADIUS reply attributes of a plan, for every vendor and tier."""
    rows: list[Attribute] = []
    if plan.kind in (PlanKind.DIALUP, PlanKind.PPPOE):
        rows += [
            Attribute("all", "", "Service-Type", ":=", "Framed-User"),
            Attribute("all", "", "Framed-Protocol", ":=", "PPP"),
        ]
    if plan.session_timeout:
        rows.append(Attribute("all", "", "Session-Timeout", ":=", str(plan.session_timeout)))
    if plan.idle_timeout:
        rows.append(Attribute("all", "", "Idle-Timeout", ":=", str(plan.idle_timeout)))
    if plan.port_limit:
        rows.append(Attribute("all", "", "Port-Limit", ":=", str(plan.port_limit)))
    rows.append(Attribute("all", "", "Acct-Interim-Interval", ":=", str(INTERIM_INTERVAL)))
    rows += _rate_attributes("normal", plan.download_bps, plan.upload_bps)
    if plan.cap_action is CapAction.THROTTLE and plan.data_cap_bytes is not None:
        rows += _rate_attributes("fairuse", plan.fair_use_download_bps, plan.fair_use_upload_bps)
    return rows


def _regenerate(session: Session, plan: ServicePlan) -> None:
    plan.attributes.clear()
    session.flush()
    for row in reply_attributes(plan):
        plan.attributes.append(
            PlanAttribute(
                tier=row.tier,
                vendor=row.vendor,
                attribute=row.attribute,
                op=row.op,
                value=row.value,
            )
        )


def _check_name(name: str) -> str:
    name = name.strip().lower()
    if not _NAME.match(name):
        raise ValidationError(
            "invalid plan name %(name)r: use lower-case letters, digits, '.', '-' and '_'",
            name=name,
        )
    return name


def _check_description(text: str) -> str:
    text = text.strip()
    if len(text) > 200:
        raise ValidationError("description is longer than 200 characters")
    if any(ord(ch) < 32 for ch in text):
        raise ValidationError("description must not contain control characters")
    return text


def parse_kind(kind: str) -> PlanKind:
    try:
        return PlanKind(kind.strip().lower().replace("-", ""))
    except ValueError:
        choices = ", ".join(k.value for k in PlanKind)
        raise ValidationError(
            "unknown plan kind %(kind)r: choose one of %(choices)s", kind=kind, choices=choices
        ) from None


def parse_cap_action(action: str) -> CapAction:
    try:
        return CapAction(action.strip().lower())
    except ValueError:
        raise ValidationError(
            "unknown cap action %(action)r: reject or throttle", action=action
        ) from None


def _positive_or_none(value: int | None, field: str, maximum: int = 2**62) -> int | None:
    if value is None or value == 0:
        return None
    if value < 0 or value > maximum:
        raise ValidationError("%(field)s out of range: %(value)s", field=field, value=value)
    return value


def _validate(plan: ServicePlan) -> None:
    if not 1 <= plan.simultaneous_use <= MAX_SIMULTANEOUS:
        raise ValidationError("simultaneous sessions must be 1 to %(max)s", max=MAX_SIMULTANEOUS)
    if plan.port_limit is not None and not 1 <= plan.port_limit <= MAX_SIMULTANEOUS:
        raise ValidationError("port limit must be 1 to %(max)s", max=MAX_SIMULTANEOUS)
    if plan.cap_action is CapAction.THROTTLE:
        if plan.data_cap_bytes is None:
            raise ValidationError("a throttling plan needs a data cap")
        if plan.fair_use_download_bps == 0 and plan.fair_use_upload_bps == 0:
            raise ValidationError("a throttling plan needs a fair-use rate")
        if (plan.download_bps and plan.fair_use_download_bps > plan.download_bps) or (
            plan.upload_bps and plan.fair_use_upload_bps > plan.upload_bps
        ):
            raise ValidationError("the fair-use rate must not exceed the plan's rate")


def create(
    ctx: ServiceContext,
    name: str,
    *,
    kind: str = "pppoe",
    download_bps: int = 0,
    upload_bps: int = 0,
    data_cap_bytes: int | None = None,
    time_cap_seconds: int | None = None,
    cap_action: str = "reject",
    fair_use_download_bps: int = 0,
    fair_use_upload_bps: int = 0,
    session_timeout: int | None = None,
    idle_timeout: int | None = None,
    simultaneous_use: int = 1,
    port_limit: int | None = None,
    description: str = "",
) -> ServicePlan:
    name = _check_name(name)
    if ctx.session.scalar(select(ServicePlan.id).where(ServicePlan.name == name)) is not None:
        raise Conflict("plan %(name)r already exists", name=name)
    plan = ServicePlan(
        name=name,
        description=_check_description(description),
        kind=parse_kind(kind),
        download_bps=parse_rate(download_bps),
        upload_bps=parse_rate(upload_bps),
        data_cap_bytes=_positive_or_none(data_cap_bytes, Term("data cap")),
        time_cap_seconds=_positive_or_none(time_cap_seconds, Term("time cap")),
        cap_action=parse_cap_action(cap_action),
        fair_use_download_bps=parse_rate(fair_use_download_bps),
        fair_use_upload_bps=parse_rate(fair_use_upload_bps),
        session_timeout=_positive_or_none(session_timeout, Term("session timeout"), MAX_TIMEOUT),
        idle_timeout=_positive_or_none(idle_timeout, Term("idle timeout"), MAX_TIMEOUT),
        simultaneous_use=simultaneous_use,
        port_limit=_positive_or_none(port_limit, Term("port limit")),
    )
    _validate(plan)
    ctx.session.add(plan)
    ctx.session.flush()
    _regenerate(ctx.session, plan)
    ctx.session.flush()
    ctx.audit("plan.create", name, **as_dict(plan, with_attributes=False))
    return plan


def update(
    ctx: ServiceContext,
    name: str,
    *,
    kind: str | Unset = UNSET,
    download_bps: int | Unset = UNSET,
    upload_bps: int | Unset = UNSET,
    data_cap_bytes: int | Unset | None = UNSET,
    time_cap_seconds: int | Unset | None = UNSET,
    cap_action: str | Unset = UNSET,
    fair_use_download_bps: int | Unset = UNSET,
    fair_use_upload_bps: int | Unset = UNSET,
    session_timeout: int | Unset | None = UNSET,
    idle_timeout: int | Unset | None = UNSET,
    simultaneous_use: int | Unset = UNSET,
    port_limit: int | Unset | None = UNSET,
    description: str | Unset = UNSET,
) -> ServicePlan:
    """Change the given fields (None clears an optional one); the attributes follow."""
    plan = get(ctx.session, name)
    before = as_dict(plan, with_attributes=False)
    given: dict[str, tuple[object, Callable[[Any], object]]] = {
        "kind": (kind, parse_kind),
        "download_bps": (download_bps, parse_rate),
        "upload_bps": (upload_bps, parse_rate),
        "data_cap_bytes": (data_cap_bytes, lambda v: _positive_or_none(v, Term("data cap"))),
        "time_cap_seconds": (time_cap_seconds, lambda v: _positive_or_none(v, Term("time cap"))),
        "cap_action": (cap_action, parse_cap_action),
        "fair_use_download_bps": (fair_use_download_bps, parse_rate),
        "fair_use_upload_bps": (fair_use_upload_bps, parse_rate),
        "session_timeout": (
            session_timeout,
            lambda v: _positive_or_none(v, Term("session timeout"), MAX_TIMEOUT),
        ),
        "idle_timeout": (
            idle_timeout,
            lambda v: _positive_or_none(v, Term("idle timeout"), MAX_TIMEOUT),
        ),
        "simultaneous_use": (simultaneous_use, int),
        "port_limit": (port_limit, lambda v: _positive_or_none(v, Term("port limit"))),
        "description": (description, _check_description),
    }
    for field, (value, parse) in given.items():
        if not isinstance(value, Unset):
            setattr(plan, field, parse(value))
    _validate(plan)
    _regenerate(ctx.session, plan)
    ctx.session.flush()
    after = as_dict(plan, with_attributes=False)
    changes = {key: value for key, value in after.items() if before.get(key) != value}
    ctx.audit("plan.update", plan.name, **changes)
    return plan


def remove(ctx: ServiceContext, name: str) -> None:
    plan = get(ctx.session, name)
    used = subscriber_counts(ctx.session).get(plan.id, 0)
    if used:
        raise Conflict(
            "plan %(plan)r has %(count)s subscriber(s); move them first", plan=plan.name, count=used
        )
    ctx.session.delete(plan)
    ctx.audit("plan.remove", plan.name)


def as_dict(plan: ServicePlan, *, with_attributes: bool = True) -> dict[str, object]:
    data: dict[str, object] = {
        "name": plan.name,
        "description": plan.description,
        "kind": plan.kind.value,
        "download_bps": plan.download_bps,
        "upload_bps": plan.upload_bps,
        "data_cap_bytes": plan.data_cap_bytes,
        "time_cap_seconds": plan.time_cap_seconds,
        "cap_action": plan.cap_action.value,
        "fair_use_download_bps": plan.fair_use_download_bps,
        "fair_use_upload_bps": plan.fair_use_upload_bps,
        "session_timeout": plan.session_timeout,
        "idle_timeout": plan.idle_timeout,
        "simultaneous_use": plan.simultaneous_use,
        "port_limit": plan.port_limit,
    }
    if with_attributes:
        data["reply_attributes"] = [
            {
                "tier": a.tier,
                "vendor": a.vendor,
                "attribute": a.attribute,
                "op": a.op,
                "value": a.value,
            }
            for a in plan.attributes
        ]
    return data
