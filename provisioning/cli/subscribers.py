"""`muninet plan|nas|pool|subscriber|sessions|usage`: the dial-up and broadband side."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any, TypeVar

import click

from provisioning.cli.app import App, emit_json, emit_table, json_option, pass_app, read_password
from provisioning.durations import parse_duration
from provisioning.models import CapAction, NasVendor, PlanKind, SubscriberStatus
from provisioning.services import nas, plans, radius, subscribers
from provisioning.sizes import format_size, parse_size

KINDS = click.Choice([k.value for k in PlanKind])
VENDORS = click.Choice([v.value for v in NasVendor])
CAP_ACTIONS = click.Choice([a.value for a in CapAction])
F = TypeVar("F", bound=Callable[..., Any])
NONE_WORDS = {"none", "no", "0", "-", ""}

password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
generate = click.option("--generate", is_flag=True, help="Generate a password and print it once.")


def _optional(value: str | None, parse: Any) -> Any:
    """None: not given; "none": clear it; otherwise the parsed value."""
    if value is None:
        return plans.UNSET
    if value.strip().lower() in NONE_WORDS:
        return None
    return parse(value)


def _seconds(text: str) -> int:
    return int(parse_duration(text))


def _duration_text(seconds: int | None) -> str:
    if not seconds:
        return "-"
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % factor == 0:
            return f"{seconds // factor}{unit}"
    return f"{seconds}s"


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


# -- plans ------------------------------------------------------------------------------------


@click.group("plan")
def plan_group() -> None:
    """Service plans: speeds, monthly caps, timeouts, sessions."""


def _plan_options(creating: bool) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        options = [
            click.option("--kind", type=KINDS, default="pppoe" if creating else None),
            click.option("--down", "download", help="Download rate, e.g. 2M, 512k (bit/s)."),
            click.option("--up", "upload", help="Upload rate, e.g. 512k (bit/s)."),
            click.option("--data-cap", help="Monthly data cap, e.g. 20G ('none': no cap)."),
            click.option("--time-cap", help="Monthly time cap, e.g. 100h ('none': no cap)."),
            click.option(
                "--cap-action", type=CAP_ACTIONS, help="At the data cap: reject or throttle."
            ),
            click.option("--fair-use-down", help="Download rate over the cap (throttle)."),
            click.option("--fair-use-up", help="Upload rate over the cap (throttle)."),
            click.option("--session-timeout", help="Longest session, e.g. 24h ('none')."),
            click.option("--idle-timeout", help="Hang up after this idle time, e.g. 10m ('none')."),
            click.option("--sessions", "simultaneous", type=int, help="Simultaneous sessions."),
            click.option("--port-limit", help="Port-Limit (multilink channels; 'none')."),
            click.option("--description", help="Free text."),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _plan_values(options: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "kind": options["kind"],
        "download_bps": plans.parse_rate(options["download"]) if options["download"] else None,
        "upload_bps": plans.parse_rate(options["upload"]) if options["upload"] else None,
        "data_cap_bytes": _optional(options["data_cap"], parse_size),
        "time_cap_seconds": _optional(options["time_cap"], _seconds),
        "cap_action": options["cap_action"],
        "fair_use_download_bps": plans.parse_rate(options["fair_use_down"])
        if options["fair_use_down"]
        else None,
        "fair_use_upload_bps": plans.parse_rate(options["fair_use_up"])
        if options["fair_use_up"]
        else None,
        "session_timeout": _optional(options["session_timeout"], _seconds),
        "idle_timeout": _optional(options["idle_timeout"], _seconds),
        "simultaneous_use": options["simultaneous"],
        "port_limit": _optional(options["port_limit"], int),
        "description": options["description"],
    }
    return {key: value for key, value in values.items() if value is not None}


def _plan_summary(plan: Any) -> str:
    cap = format_size(plan.data_cap_bytes) if plan.data_cap_bytes else "no data cap"
    return (
        f"{plan.name}: {plan.kind.value}, {plans.format_rate(plan.download_bps)}/"
        f"{plans.format_rate(plan.upload_bps)}, {cap}"
    )


@plan_group.command("add")
@click.argument("name")
@_plan_options(creating=True)
@pass_app
def plan_add(app: App, /, name: str, **options: Any) -> None:
    """Add the plan NAME, e.g. `plan add dsl-20 --down 20M --up 2M --data-cap 100G`."""
    values = {k: v for k, v in _plan_values(options).items() if v is not plans.UNSET}
    with app.transaction() as ctx:
        plan = plans.create(ctx, name, **values)
        click.echo(f"plan {_plan_summary(plan)} added")


@plan_group.command("update")
@click.argument("name")
@_plan_options(creating=False)
@pass_app
def plan_update(app: App, /, name: str, **options: Any) -> None:
    """Change the given settings of plan NAME; its subscribers get them at their next login."""
    with app.transaction() as ctx:
        plan = plans.update(ctx, name, **_plan_values(options))
        click.echo(f"plan {_plan_summary(plan)} updated")


@plan_group.command("list")
@json_option
@pass_app
def plan_list(app: App, as_json: bool) -> None:
    """List plans."""
    with app.reader() as session:
        rows = plans.list_plans(session)
        counts = plans.subscriber_counts(session)
        if as_json:
            emit_json([{**plans.as_dict(p), "subscribers": counts.get(p.id, 0)} for p in rows])
            return
        emit_table(
            [
                "name",
                "kind",
                "down",
                "up",
                "data cap",
                "time cap",
                "at cap",
                "sessions",
                "subscribers",
            ],
            [
                (
                    p.name,
                    p.kind.value,
                    plans.format_rate(p.download_bps),
                    plans.format_rate(p.upload_bps),
                    format_size(p.data_cap_bytes) if p.data_cap_bytes else "-",
                    _duration_text(p.time_cap_seconds),
                    p.cap_action.value if p.data_cap_bytes else "-",
                    p.simultaneous_use,
                    counts.get(p.id, 0),
                )
                for p in rows
            ],
        )


@plan_group.command("show")
@click.argument("name")
@json_option
@pass_app
def plan_show(app: App, name: str, as_json: bool) -> None:
    """Show a plan and the RADIUS attributes made from it."""
    with app.reader() as session:
        plan = plans.get(session, name)
        data = plans.as_dict(plan)
        data["subscribers"] = plans.subscriber_counts(session).get(plan.id, 0)
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        if key == "reply_attributes":
            continue
        click.echo(f"{key.replace('_', ' ') + ':':<24} {'-' if value is None else value}")
    click.echo("reply attributes:")
    for attr in data["reply_attributes"]:  # type: ignore[attr-defined]
        vendor = attr["vendor"] or "any NAS"
        click.echo(
            f"  [{attr['tier']:<7} {vendor:<8}] {attr['attribute']} {attr['op']} {attr['value']}"
        )


@plan_group.command("remove")
@click.argument("name")
@pass_app
def plan_remove(app: App, name: str) -> None:
    """Remove a plan that no subscriber uses."""
    with app.transaction() as ctx:
        plans.remove(ctx, name)
    click.echo(f"plan {name} removed")


# -- NAS and pools ----------------------------------------------------------------------------


@click.group("nas")
def nas_group() -> None:
    """Network access servers (RADIUS clients). FreeRADIUS restarts to load changes."""


@nas_group.command("add")
@click.argument("name")
@click.option("--address", required=True, help="IP address (or network in CIDR form).")
@click.option("--vendor", type=VENDORS, default="other", show_default=True)
@click.option("--secret-stdin", is_flag=True, help="Read the shared secret from stdin.")
@click.option("--generate", is_flag=True, help="Generate a shared secret and print it once.")
@click.option("--coa-port", type=int, default=3799, show_default=True)
@click.option("--description", default="")
@pass_app
def nas_add(
    app: App,
    name: str,
    address: str,
    vendor: str,
    secret_stdin: bool,
    generate: bool,
    coa_port: int,
    description: str,
) -> None:
    """Add the NAS NAME."""
    import sys

    if secret_stdin == generate:
        raise click.UsageError("give exactly one of --secret-stdin or --generate")
    secret = nas.generate_secret() if generate else sys.stdin.readline().rstrip("\r\n")
    with app.transaction() as ctx:
        item = nas.create(
            ctx, name, address, secret, vendor=vendor, coa_port=coa_port, description=description
        )
        click.echo(f"NAS {item.name} ({item.address}, {item.vendor.value}) added")
    if generate:
        click.echo(f"secret: {secret}")


@nas_group.command("list")
@json_option
@pass_app
def nas_list(app: App, as_json: bool) -> None:
    """List NASes (secrets are not shown)."""
    with app.reader() as session:
        rows = nas.list_nas(session)
        data = [
            {
                "name": n.name,
                "address": n.address,
                "vendor": n.vendor.value,
                "coa_port": n.coa_port,
                "description": n.description,
            }
            for n in rows
        ]
    if as_json:
        emit_json(data)
        return
    emit_table(
        ["name", "address", "vendor", "coa port", "description"],
        [(d["name"], d["address"], d["vendor"], d["coa_port"], d["description"]) for d in data],
    )


@nas_group.command("remove")
@click.argument("name")
@pass_app
def nas_remove(app: App, name: str) -> None:
    """Remove the NAS NAME."""
    with app.transaction() as ctx:
        nas.remove(ctx, name)
    click.echo(f"NAS {name} removed")


@click.group("pool")
def pool_group() -> None:
    """IP address pools configured on the NASes (sent as Framed-Pool)."""


@pool_group.command("add")
@click.argument("name")
@click.argument("network")
@click.option("--description", default="")
@pass_app
def pool_add(app: App, name: str, network: str, description: str) -> None:
    """Add the pool NAME covering NETWORK (CIDR)."""
    with app.transaction() as ctx:
        pool = nas.create_pool(ctx, name, network, description)
        click.echo(f"pool {pool.name} ({pool.network}) added")


@pool_group.command("list")
@json_option
@pass_app
def pool_list(app: App, as_json: bool) -> None:
    """List pools."""
    with app.reader() as session:
        data = [
            {"name": p.name, "network": p.network, "description": p.description}
            for p in nas.list_pools(session)
        ]
    if as_json:
        emit_json(data)
        return
    emit_table(
        ["name", "network", "description"],
        [(d["name"], d["network"], d["description"]) for d in data],
    )


# -- subscribers ------------------------------------------------------------------------------


@click.group("subscriber")
def subscriber_group() -> None:
    """Dial-up and broadband subscribers of member offices."""


@subscriber_group.command("add")
@click.argument("username")
@click.option("--member", "member_slug", required=True, help="The member owning the line.")
@click.option("--plan", "plan_name", required=True, help="The service plan.")
@password_stdin
@generate
@click.option("--chap", is_flag=True, help="Also store the cleartext, so that CHAP works.")
@click.option("--ip", "static_ip", help="Static IPv4 address (Framed-IP-Address).")
@click.option("--pool", "pool_name", help="Address pool on the NAS (Framed-Pool).")
@click.option("--bind", "calling_station_id", help="Allow only this Calling-Station-Id.")
@click.option("--expires", type=click.DateTime(["%Y-%m-%d"]), help="Last day of service.")
@click.option("--notes", default="")
@pass_app
def subscriber_add(
    app: App,
    username: str,
    member_slug: str,
    plan_name: str,
    password_stdin: bool,
    generate: bool,
    chap: bool,
    static_ip: str | None,
    pool_name: str | None,
    calling_station_id: str | None,
    expires: datetime | None,
    notes: str,
) -> None:
    """Create the subscriber USERNAME."""
    password, generated = read_password(password_stdin, generate)
    with app.transaction() as ctx:
        sub = subscribers.create(
            ctx,
            username,
            member_slug,
            plan_name,
            password,
            chap=chap,
            static_ip=static_ip,
            pool_name=pool_name,
            calling_station_id=calling_station_id,
            expires_on=expires.date() if expires else None,
            notes=notes,
        )
        click.echo(f"subscriber {sub.username} added ({sub.member.slug}, plan {sub.plan.name})")
    if generated:
        click.echo(f"password: {password}")


@subscriber_group.command("list")
@click.option("--member", "member_slug", help="Only this member's subscribers.")
@json_option
@pass_app
def subscriber_list(app: App, member_slug: str | None, as_json: bool) -> None:
    """List subscribers."""
    today = date.today()
    with app.reader() as session:
        data = [
            subscribers.as_dict(s, today)
            for s in subscribers.list_subscribers(session, member_slug)
        ]
    if as_json:
        emit_json(data)
        return
    emit_table(
        ["username", "member", "plan", "status", "address", "bound to", "expires"],
        [
            (
                d["username"],
                d["member"],
                d["plan"],
                d["status"],
                d["static_ip"] or (f"pool {d['pool']}" if d["pool"] else "-"),
                d["calling_station_id"] or "-",
                d["expires_on"] or "-",
            )
            for d in data
        ],
    )


@subscriber_group.command("show")
@click.argument("username")
@json_option
@pass_app
def subscriber_show(app: App, username: str, as_json: bool) -> None:
    """Show a subscriber, this month's usage and its open sessions."""
    with app.reader() as session:
        sub = subscribers.get(session, username)
        data: dict[str, Any] = subscribers.as_dict(sub)
        year, month = radius.parse_month(None)
        report = radius.usage(session, year, month)
        row = next((r for r in report.rows if r.username == sub.username), None)
        data["usage_this_month"] = row.as_dict() if row else None
        data["online"] = [
            s.as_dict() for s in radius.online_sessions(session, username=sub.username)
        ]
    if as_json:
        emit_json(data)
        return
    for key in (
        "username",
        "member",
        "plan",
        "status",
        "status_reason",
        "chap",
        "static_ip",
        "pool",
        "calling_station_id",
        "expires_on",
        "notes",
        "created_at",
    ):
        value = data[key]
        click.echo(f"{key.replace('_', ' ') + ':':<20} {'-' if value in (None, '') else value}")
    used = data["usage_this_month"]
    if used:
        click.echo(
            f"{'this month:':<20} {format_size(used['total_octets'])} in {used['sessions']} "
            f"session(s), {_duration_text(used['session_time'])}"
        )
    click.echo(f"{'online sessions:':<20} {len(data['online'])}")


@subscriber_group.command("suspend")
@click.argument("username")
@click.option("--reason", default="")
@pass_app
def subscriber_suspend(app: App, username: str, reason: str) -> None:
    """Suspend USERNAME: its next login is rejected ("Account suspended")."""
    with app.transaction() as ctx:
        sub = subscribers.set_status(ctx, username, SubscriberStatus.SUSPENDED, reason)
    click.echo(f"subscriber {sub.username} suspended")


@subscriber_group.command("resume")
@click.argument("username")
@click.option("--reason", default="")
@pass_app
def subscriber_resume(app: App, username: str, reason: str) -> None:
    """Resume a suspended subscriber."""
    with app.transaction() as ctx:
        sub = subscribers.set_status(ctx, username, SubscriberStatus.ACTIVE, reason)
    click.echo(f"subscriber {sub.username} resumed")


@subscriber_group.command("passwd")
@click.argument("username")
@password_stdin
@generate
@click.option("--chap/--no-chap", default=None, help="Store the cleartext for CHAP (or stop).")
@pass_app
def subscriber_passwd(
    app: App, username: str, password_stdin: bool, generate: bool, chap: bool | None
) -> None:
    """Set a new password for USERNAME."""
    password, generated = read_password(password_stdin, generate)
    with app.transaction() as ctx:
        sub = subscribers.set_password(ctx, username, password, chap=chap)
        click.echo(f"password of {sub.username} changed")
    if generated:
        click.echo(f"password: {password}")


@subscriber_group.command("kick")
@click.argument("username")
@pass_app
def subscriber_kick(app: App, username: str) -> None:
    """Disconnect every open session of USERNAME (RFC 5176 Disconnect-Request to its NAS)."""
    from provisioning.audit import Actor
    from provisioning.radius_coa import NasUnavailable, kick

    kicks = kick(app.database(), Actor.cli(), username)
    if not kicks:
        click.echo(f"{username.strip().lower()}: no open sessions")
        return
    for item in kicks:
        click.echo(item.describe())
    failed = [item for item in kicks if item.result is None or not item.result.ok]
    if failed:
        raise NasUnavailable(
            f"could not disconnect {len(failed)} of {len(kicks)} session(s) of "
            f"{username.strip().lower()}"
        )


@subscriber_group.command("remove")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def subscriber_remove(app: App, username: str, yes: bool) -> None:
    """Remove USERNAME (its accounting history stays)."""
    if not yes:
        click.confirm(f"remove subscriber {username}?", abort=True)
    with app.transaction() as ctx:
        subscribers.remove(ctx, username)
    click.echo(f"subscriber {username} removed")


# -- sessions and usage -----------------------------------------------------------------------


@click.command("sessions")
@click.option("--member", "member_slug", help="Only this member's subscribers.")
@json_option
@pass_app
def sessions_command(app: App, member_slug: str | None, as_json: bool) -> None:
    """Online sessions (open in radacct)."""
    with app.reader() as session:
        rows = radius.online_sessions(session, member_slug)
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    emit_table(
        ["username", "member", "nas", "ip", "since", "time", "down", "up", "caller"],
        [
            (
                r.username,
                r.member or "-",
                r.nas_address,
                r.framed_ip or "-",
                _when(r.started),
                _duration_text(r.session_time) if r.session_time else "0s",
                format_size(r.output_octets),
                format_size(r.input_octets),
                r.calling_station_id or "-",
            )
            for r in rows
        ],
    )


@click.command("usage")
@click.option("--member", "member_slug", help="Only this member's subscribers.")
@click.option("--month", help="YYYY-MM; default: this month.")
@click.option("--subscriber", "username", help="One subscriber's usage per day instead.")
@json_option
@pass_app
def usage_command(
    app: App, member_slug: str | None, month: str | None, username: str | None, as_json: bool
) -> None:
    """A month's usage per subscriber (top users first) and per member, or one line's days."""
    year, number = radius.parse_month(month)
    if username is not None:
        _daily_usage(app, username, year, number, as_json)
        return
    with app.reader() as session:
        report = radius.usage(session, year, number, member_slug)
    if as_json:
        emit_json(report.as_dict())
        return
    click.echo(f"usage in {year:04d}-{number:02d}")
    emit_table(
        ["username", "member", "sessions", "time", "down", "up", "total"],
        [
            (
                r.username,
                r.member or "-",
                r.sessions,
                _duration_text(r.session_time),
                format_size(r.output_octets),
                format_size(r.input_octets),
                format_size(r.total_octets),
            )
            for r in report.rows
        ],
    )
    if report.members and member_slug is None:
        click.echo("")
        emit_table(
            ["member", "sessions", "time", "total"],
            [
                (slug, r.sessions, _duration_text(r.session_time), format_size(r.total_octets))
                for slug, r in sorted(report.members.items())
            ],
        )


def _daily_usage(app: App, username: str, year: int, month: int, as_json: bool) -> None:
    with app.reader() as session:
        subscriber = subscribers.get(session, username)
        days = radius.daily_usage(session, subscriber.username, year, month)
    if as_json:
        emit_json(
            {
                "month": f"{year:04d}-{month:02d}",
                "username": subscriber.username,
                "days": {
                    f"{year:04d}-{month:02d}-{day:02d}": r.as_dict() for day, r in days.items()
                },
            }
        )
        return
    click.echo(f"usage of {subscriber.username} in {year:04d}-{month:02d}, by day")
    emit_table(
        ["day", "sessions", "time", "down", "up", "total"],
        [
            (
                f"{year:04d}-{month:02d}-{day:02d}",
                r.sessions,
                _duration_text(r.session_time),
                format_size(r.output_octets),
                format_size(r.input_octets),
                format_size(r.total_octets),
            )
            for day, r in days.items()
        ],
    )


# -- cap enforcement ----------------------------------------------------------------------------


@click.group("radius")
def radius_group() -> None:
    """RADIUS housekeeping: monthly caps enforced during sessions."""


@radius_group.command("enforce")
@click.option("--dry-run", is_flag=True, help="Show what would be sent, send nothing.")
@pass_app
def radius_enforce(app: App, dry_run: bool) -> None:
    """Close stale sessions, then disconnect or throttle (CoA) sessions past their cap.

    A session with no accounting for twice the interim interval is closed first (its
    NAS lost it: it would block Simultaneous-Use forever). Then a session of a
    `reject` plan, or past its time cap, gets a Disconnect-Request; a `throttle`
    plan's session a CoA-Request with the fair-use rate. FreeRADIUS checks the caps
    only at login; `muninet run` does this every round, and in production the
    deployment's systemd timer (muninet-radius-enforce.timer) runs this command.
    """
    from provisioning.audit import Actor
    from provisioning.radius_coa import enforce
    from provisioning.services import radius

    if not dry_run:
        with app.transaction() as ctx:
            closed = radius.close_stale_sessions(ctx)
        if closed:
            click.echo(f"closed {closed} stale session(s)")
    done = enforce(app.database(), Actor.cli(), dry_run=dry_run)
    if not done:
        click.echo("no open session is past its cap")
        return
    for item in done:
        click.echo(item.describe())


@radius_group.command("rebuild-rollup")
@pass_app
def radius_rebuild_rollup(app: App) -> None:
    """Recompute the monthly usage rollup from radacct, in the current time zone.

    Needed only after the server's time zone changed (the reports then sum radacct,
    slowly, until this has run). Holds off accounting writes while it runs: minutes
    at millions of sessions.
    """
    from provisioning.services import radius

    with app.transaction() as ctx:
        rows = radius.rebuild_usage_rollup(ctx)
    click.echo(f"usage rollup rebuilt: {rows} subscriber-month row(s)")


COMMANDS = [
    radius_group,
    plan_group,
    nas_group,
    pool_group,
    subscriber_group,
    sessions_command,
    usage_command,
]
