"""Members (create, edit, suspend), domains (DNS health, records to publish, DKIM, filters)
and aliases.

The views read and change through `provisioning` services only; `admin_ui.auth` decides
what an admin may reach: a member admin sees its own member, its domains and its
aliases, and everything else answers 404 as if it did not exist. Creating members and
domains, changing packages and suspending are the superadmin's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from admin_ui.auth import (
    current_admin,
    login_required,
    require_member,
    scope,
    superadmin_required,
    unit_of_work,
)
from admin_ui.context import database, settings
from admin_ui.forms import InvalidForm, optional_date, optional_whole
from admin_ui.i18n import error_text
from provisioning import dnscheck
from provisioning.dnsrecords import records_to_publish
from provisioning.errors import MuninetError, NotFound
from provisioning.models import Alias, DkimKeyStatus, Domain, Mailbox, MemberKind, MemberStatus
from provisioning.services import aliases, dkim, domains, mailboxes, members
from provisioning.settings import Settings
from provisioning.sizes import format_size, parse_size

directory = Blueprint("directory", __name__)

Page = str | tuple[str, int] | BaseResponse

# The DNS check never holds a page longer than this (seconds; app config may lower it),
# and no single lookup waits longer than DNS_LOOKUP_SECONDS.
DNS_CHECK_SECONDS = 20.0
DNS_LOOKUP_SECONDS = 4.0


def _error_status(exc: MuninetError) -> int:
    """A refused form: the service's status, but 422 for a name that does not exist."""
    return 422 if exc.http_status == 404 else exc.http_status


def _form(fields: Iterable[str]) -> dict[str, str]:
    return {name: request.form.get(name, "").strip() for name in fields}


def _whole(text: str, label: str) -> int | None:
    return optional_whole(text, _("%(field)s must be a whole number.", field=label))


def _size(text: str) -> int | None:
    return parse_size(text.replace(",", ".")) if text else None


def _score(text: str) -> float | None:
    if not text:
        return None
    try:
        return float(text.replace(",", "."))
    except ValueError:
        raise InvalidForm(_("Spam scores must be numbers, e.g. 6 or 7.5.")) from None


def _lines(text: str) -> list[str]:
    """Addresses one per line (commas too, as people paste them)."""
    return [part.strip() for line in text.splitlines() for part in line.split(",") if part.strip()]


# -- labels -----------------------------------------------------------------------------------


def kind_labels() -> dict[str, str]:
    return {
        MemberKind.MUNICIPALITY.value: _("Municipality"),
        MemberKind.COUNTY.value: _("County"),
        MemberKind.SCHOOL.value: _("School"),
        MemberKind.LIBRARY.value: _("Library"),
        MemberKind.CULTURE.value: _("Cultural institution"),
        MemberKind.ASSOCIATION.value: _("The association"),
        MemberKind.OTHER.value: _("Other"),
    }


def status_labels() -> dict[str, str]:
    return {
        MemberStatus.ACTIVE.value: _("Active"),
        MemberStatus.SUSPENDED.value: _("Suspended"),
        MemberStatus.ENDED.value: _("Ended"),
        DkimKeyStatus.PENDING.value: _("Pending"),
        DkimKeyStatus.RETIRED.value: _("Retired"),
    }


def check_labels() -> dict[str, str]:
    return {
        dnscheck.Status.OK.value: _("OK"),
        dnscheck.Status.MISSING.value: _("missing"),
        dnscheck.Status.WRONG.value: _("wrong"),
        dnscheck.Status.WARNING.value: _("warning"),
        dnscheck.Status.ERROR.value: _("lookup failed"),
    }


def purpose_labels() -> dict[str, str]:
    return {
        "mx": _("Mail for the domain comes to this server (MX)"),
        "spf": _("This server may send the domain's mail (SPF)"),
        "dkim": _("DKIM signing key"),
        "dmarc": _("DMARC policy"),
        "tls-rpt": _("Reports about TLS failures (TLS-RPT)"),
        "autoconfig": _("Mail client setup: Thunderbird"),
        "autodiscover": _("Mail client setup: Outlook"),
        "srv": _("Mail client setup: servers and ports (SRV)"),
    }


@directory.app_context_processor
def _labels() -> dict[str, object]:
    return {
        "member_kind_labels": kind_labels,
        "directory_status_labels": status_labels,
        "maildir_bytes": maildir_bytes,
    }


def maildir_bytes(boxes: Sequence[Mailbox]) -> int:
    """What these mailboxes hold on disk now (the quota in use, not the quota allocated)."""
    return sum(mailboxes.usage(settings(), box).bytes for box in boxes)


# -- members ----------------------------------------------------------------------------------

DETAIL_FIELDS = (
    "name",
    "kind",
    "contact_name",
    "contact_email",
    "contact_phone",
    "contract_number",
    "contract_start",
    "contract_end",
)
PACKAGE_FIELDS = ("max_mailboxes", "mail_quota", "max_lines")


def _package(form: dict[str, str]) -> dict[str, int | None]:
    return {
        "max_mailboxes": _whole(form["max_mailboxes"], _("Mailboxes allowed")),
        "mail_quota": _size(form["mail_quota"]),
        "max_lines": _whole(form["max_lines"], _("Subscriber lines allowed")),
    }


def _member_page(form: dict[str, str], *, slug: str | None, error: str | None = None) -> str:
    defaults = settings().defaults
    return render_template(
        "directory_member_form.html",
        form=form,
        slug=slug,
        error=error,
        placeholders={
            "max_mailboxes": defaults.member_max_mailboxes,
            "mail_quota": format_size(defaults.member_mail_quota),
            "max_lines": defaults.member_max_lines,
        },
    )


@directory.route("/members/new", methods=["GET", "POST"])
@superadmin_required
def member_new() -> Page:
    fields = ("slug", *DETAIL_FIELDS, *PACKAGE_FIELDS)
    if request.method == "GET":
        return _member_page({**dict.fromkeys(fields, ""), "kind": "municipality"}, slug=None)
    form = _form(fields)
    try:
        package = _package(form)
        with unit_of_work() as ctx:
            member = members.create(
                ctx,
                form["slug"],
                form["name"],
                kind=form["kind"],
                contact_name=form["contact_name"],
                contact_email=form["contact_email"],
                contact_phone=form["contact_phone"],
                contract_number=form["contract_number"],
                contract_start=optional_date(form["contract_start"]),
                contract_end=optional_date(form["contract_end"]),
                **package,
            )
            slug = member.slug
    except InvalidForm as exc:
        return _member_page(form, slug=None, error=error_text(exc)), 422
    except MuninetError as exc:
        return _member_page(form, slug=None, error=error_text(exc)), _error_status(exc)
    flash(_("Member %(name)s created.", name=form["name"]), "info")
    return redirect(url_for("admin.member_detail", slug=slug))


def _member_form(slug: str) -> dict[str, str]:
    with database().reader() as db:
        try:
            member = members.get(db, slug)
        except NotFound:
            abort(404)
        return {
            "name": member.name,
            "kind": member.kind.value,
            "contact_name": member.contact_name,
            "contact_email": member.contact_email,
            "contact_phone": member.contact_phone,
            "contract_number": member.contract_number,
            "contract_start": member.contract_start.isoformat() if member.contract_start else "",
            "contract_end": member.contract_end.isoformat() if member.contract_end else "",
            "max_mailboxes": str(member.max_mailboxes),
            "mail_quota": format_size(member.mail_quota_bytes, exact=True),
            "max_lines": str(member.max_lines),
        }


@directory.route("/members/<slug>/edit", methods=["GET", "POST"])
@login_required
def member_edit(slug: str) -> Page:
    """Superadmin: everything but the slug. A member's own admin: its contact only."""
    require_member(slug)
    current = _member_form(slug)
    if request.method == "GET":
        return _member_page(current, slug=slug)
    superadmin = current_admin().is_superadmin
    posted = _form(DETAIL_FIELDS + PACKAGE_FIELDS)
    contact = ("contact_name", "contact_email", "contact_phone")
    form = posted if superadmin else {**current, **{k: posted[k] for k in contact}}
    try:
        package = _package(form)
        before = _package(current)
        with unit_of_work() as ctx:
            members.set_details(
                ctx,
                slug,
                name=form["name"],
                kind=form["kind"],
                contact_name=form["contact_name"],
                contact_email=form["contact_email"],
                contact_phone=form["contact_phone"],
                contract_number=form["contract_number"],
                contract_start=optional_date(form["contract_start"]),
                contract_end=optional_date(form["contract_end"]),
            )
            changed = {k: v for k, v in package.items() if v is not None and v != before[k]}
            if superadmin and changed:
                members.update_package(ctx, slug, **changed)
    except InvalidForm as exc:
        return _member_page(form, slug=slug, error=error_text(exc)), 422
    except MuninetError as exc:
        return _member_page(form, slug=slug, error=error_text(exc)), _error_status(exc)
    flash(_("Member %(name)s saved.", name=form["name"]), "info")
    return redirect(url_for("admin.member_detail", slug=slug))


@directory.post("/members/<slug>/status")
@superadmin_required
def member_status(slug: str) -> Page:
    """Suspend, end or reactivate a member (its mailboxes and lines follow)."""
    wanted = request.form.get("status", "")
    try:
        status = MemberStatus(wanted)
    except ValueError:
        abort(400)
    try:
        with unit_of_work() as ctx:
            member = members.set_status(ctx, slug, status, request.form.get("reason", ""))
            name = member.name
    except NotFound:
        abort(404)
    except MuninetError as exc:
        flash(error_text(exc), "error")
        return redirect(url_for("admin.member_detail", slug=slug))
    flash(
        _("Status of %(name)s: %(status)s.", name=name, status=status_labels()[status.value]),
        "info",
    )
    return redirect(url_for("admin.member_detail", slug=slug))


# -- domains ----------------------------------------------------------------------------------


def _domain_in_scope(db: Session, name: str) -> Domain:
    """The hosted domain if the current admin may see it; 404 otherwise (also a bad name)."""
    try:
        domain = domains.get(db, name)
    except MuninetError:
        abort(404)
    member = scope()
    if member is not None and (domain.member is None or domain.member.slug != member):
        abort(404)
    return domain


def _domain_rows(db: Session) -> list[tuple[Domain, int, int, list[str]]]:
    member = scope()
    rows = []
    for domain in domains.list_domains(db):
        if member is not None and (domain.member is None or domain.member.slug != member):
            continue
        boxes, alias_count = domains.counts(db, domain)
        keys = [
            k.selector for k in dkim.list_keys(db, domain.name) if k.status is DkimKeyStatus.ACTIVE
        ]
        rows.append((domain, boxes, alias_count, keys))
    return rows


@directory.get("/domains")
@login_required
def domain_list() -> Page:
    with database().reader() as db:
        return render_template("directory_domains.html", rows=_domain_rows(db))


def _member_choices() -> list[tuple[str, str]]:
    with database().reader() as db:
        return [(m.slug, m.name) for m in members.list_members(db)]


@directory.route("/domains/new", methods=["GET", "POST"])
@superadmin_required
def domain_new() -> Page:
    choices = _member_choices()
    if request.method == "GET":
        form = {"name": "", "member": request.args.get("member", ""), "dkim": "on", "utf8": ""}
        return render_template("directory_domain_new.html", form=form, choices=choices, error=None)
    form = _form(("name", "member", "dkim", "utf8"))
    try:
        with unit_of_work() as ctx:
            domain = domains.create(
                ctx,
                form["name"],
                member_slug=form["member"] or None,
                utf8_local_parts=form["utf8"] == "on",
            )
            if form["dkim"] == "on":
                dkim.generate(ctx, domain.name, dkim.parse_algorithm("rsa"))
            name = domain.ascii_name
    except MuninetError as exc:
        page = render_template(
            "directory_domain_new.html", form=form, choices=choices, error=error_text(exc)
        )
        return page, _error_status(exc)
    flash(_("Domain %(name)s added.", name=form["name"]), "info")
    return redirect(url_for("directory.domain_detail", name=name))


def _filters_form(domain: Domain) -> dict[str, str]:
    own = domains.own_filters(domain)
    return {
        "spam_add_header_score": (
            "" if own.spam_add_header_score is None else f"{own.spam_add_header_score:g}"
        ),
        "spam_reject_score": "" if own.spam_reject_score is None else f"{own.spam_reject_score:g}",
        "virus_action": own.virus_action or "",
    }


def _render_domain(
    name: str,
    *,
    error: str | None = None,
    status: int = 200,
    filters_form: dict[str, str] | None = None,
    check: list[dnscheck.CheckResult] | None = None,
    check_error: str | None = None,
) -> Page:
    with database().reader() as db:
        domain = _domain_in_scope(db, name)
        keys = dkim.list_keys(db, domain.name, include_retired=True)
        expected = dnscheck.expected_dkim(db, domain.name)
        boxes, alias_count = domains.counts(db, domain)
        page = render_template(
            "directory_domain.html",
            domain=domain,
            mailbox_count=boxes,
            alias_count=alias_count,
            keys=keys,
            records=records_to_publish(settings(), domain.ascii_name, expected),
            purposes=purpose_labels(),
            hostname=settings().association.hostname,
            filters=domains.effective_filters(domains.own_filters(domain), settings()),
            filters_form=filters_form or _filters_form(domain),
            check=check,
            check_error=check_error,
            check_labels=check_labels(),
            failing={s.value for s in dnscheck.FAILING},
            error=error,
        )
    return page, status


@directory.get("/domains/<name>")
@login_required
def domain_detail(name: str) -> Page:
    return _render_domain(name)


def _quick(config: Settings) -> Settings:
    """The settings with each DNS lookup capped, so a dead resolver cannot stall a page."""
    timeout = min(config.dns.timeout, DNS_LOOKUP_SECONDS)
    return config.model_copy(update={"dns": config.dns.model_copy(update={"timeout": timeout})})


def run_dns_check(
    config: Settings, name: str, keys: Sequence[dnscheck.ExpectedDkim], deadline: float
) -> list[dnscheck.CheckResult] | None:
    """The DNS check in a worker thread; None when it has not finished by the deadline.

    The worker is left to end by itself (every lookup has its own timeout); it holds no
    database session, the keys were read before.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dns-check")
    try:
        future = pool.submit(dnscheck.check_domain, _quick(config), name, dkim=keys)
        return future.result(timeout=deadline)
    except FutureTimeout:
        return None
    finally:
        pool.shutdown(wait=False)


@directory.get("/domains/<name>/check")
@login_required
def domain_check(name: str) -> Page:
    """Look the domain's records up now (on demand: it takes a few seconds)."""
    with database().reader() as db:
        domain = _domain_in_scope(db, name)
        ascii_name = domain.ascii_name
        keys = dnscheck.expected_dkim(db, domain.name)
    deadline = float(current_app.config.get("DNS_CHECK_SECONDS", DNS_CHECK_SECONDS))
    results = run_dns_check(settings(), ascii_name, keys, deadline)
    if results is None:
        message = _("The DNS check did not finish within %(seconds)s seconds.", seconds=deadline)
        return _render_domain(name, check_error=message)
    return _render_domain(name, check=results)


@directory.post("/domains/<name>/dkim")
@login_required
def domain_dkim_generate(name: str) -> Page:
    with database().reader() as db:
        display = _domain_in_scope(db, name).name
    try:
        with unit_of_work() as ctx:
            key = dkim.generate(
                ctx, display, dkim.parse_algorithm(request.form.get("algorithm", ""))
            )
            selector, state = key.selector, key.status.value
    except MuninetError as exc:
        return _render_domain(name, error=error_text(exc), status=_error_status(exc))
    if state == DkimKeyStatus.PENDING.value:
        flash(
            _(
                "DKIM key %(selector)s made. Publish its record, wait a day, then activate it.",
                selector=selector,
            ),
            "info",
        )
    else:
        flash(_("DKIM key %(selector)s made and active.", selector=selector), "info")
    return redirect(url_for("directory.domain_detail", name=name))


@directory.post("/domains/<name>/dkim/<selector>/activate")
@login_required
def domain_dkim_activate(name: str, selector: str) -> Page:
    with database().reader() as db:
        display = _domain_in_scope(db, name).name
    try:
        with unit_of_work() as ctx:
            key = dkim.activate(ctx, display, selector)
            selector = key.selector
    except MuninetError as exc:
        return _render_domain(name, error=error_text(exc), status=_error_status(exc))
    flash(_("DKIM key %(selector)s is active.", selector=selector), "info")
    return redirect(url_for("directory.domain_detail", name=name))


@directory.post("/domains/<name>/filters")
@login_required
def domain_filters(name: str) -> Page:
    with database().reader() as db:
        display = _domain_in_scope(db, name).name
    form = _form(("spam_add_header_score", "spam_reject_score", "virus_action"))
    try:
        with unit_of_work() as ctx:
            domains.set_filters(
                ctx,
                display,
                spam_add_header_score=_score(form["spam_add_header_score"]),
                spam_reject_score=_score(form["spam_reject_score"]),
                virus_action=form["virus_action"] or None,
            )
    except InvalidForm as exc:
        return _render_domain(name, error=error_text(exc), status=422, filters_form=form)
    except MuninetError as exc:
        return _render_domain(
            name, error=error_text(exc), status=_error_status(exc), filters_form=form
        )
    flash(_("Filter settings saved."), "info")
    return redirect(url_for("directory.domain_detail", name=name))


# -- aliases ----------------------------------------------------------------------------------


def _alias_in_scope(db: Session, source: str) -> Alias:
    try:
        alias = aliases.get(db, source)
    except MuninetError:
        abort(404)
    require_member(alias.member.slug)
    return alias


@directory.get("/aliases")
@login_required
def alias_list() -> Page:
    member = scope() or request.args.get("member") or None  # a member admin: always its own
    with database().reader() as db:
        try:
            found = aliases.list_aliases(db, member)
        except NotFound:
            abort(404)
        return render_template("directory_aliases.html", aliases=found)


def _alias_new_page(form: dict[str, str], error: str | None = None) -> str:
    member = scope()
    choices = [c for c in _member_choices() if member is None or c[0] == member]
    return render_template("directory_alias_new.html", form=form, choices=choices, error=error)


@directory.route("/aliases/new", methods=["GET", "POST"])
@login_required
def alias_new() -> Page:
    if request.method == "GET":
        return _alias_new_page({"source": "", "destinations": "", "member": scope() or ""})
    form = _form(("source", "destinations", "member"))
    form["destinations"] = request.form.get("destinations", "")
    member = scope() or form["member"] or None
    try:
        with unit_of_work() as ctx:
            alias = aliases.create(
                ctx, form["source"], _lines(form["destinations"]), member_slug=member
            )
            key, display = alias.address, alias.display_address
    except MuninetError as exc:
        return _alias_new_page(form, error_text(exc)), _error_status(exc)
    flash(_("Alias %(address)s created.", address=display), "info")
    return redirect(url_for("directory.alias_detail", source=key))


def _render_alias(
    source: str, *, error: str | None = None, status: int = 200, text: str | None = None
) -> Page:
    with database().reader() as db:
        alias = _alias_in_scope(db, source)
        current = "\n".join(d.address for d in alias.destinations)
        page = render_template(
            "directory_alias.html",
            alias=alias,
            destinations=current if text is None else text,
            error=error,
        )
    return page, status


@directory.get("/aliases/<path:source>")
@login_required
def alias_detail(source: str) -> Page:
    return _render_alias(source)


class _Unchanged(Exception):
    """Rolls back a replacement that came out identical to what was there."""


@directory.post("/aliases/<path:source>")
@login_required
def alias_edit(source: str) -> Page:
    """New destinations: the alias is replaced in one transaction (audited as such)."""
    with database().reader() as db:
        alias = _alias_in_scope(db, source)
        key, owner = alias.address, alias.member.slug
        before = [d.address for d in alias.destinations]
    text = request.form.get("destinations", "")
    try:
        with unit_of_work() as ctx:
            aliases.remove(ctx, key)
            ctx.session.flush()
            replaced = aliases.create(ctx, key, _lines(text), member_slug=owner)
            if [d.address for d in replaced.destinations] == before:
                raise _Unchanged
    except _Unchanged:
        flash(_("Nothing changed."), "info")
        return redirect(url_for("directory.alias_detail", source=key))
    except MuninetError as exc:
        return _render_alias(key, error=error_text(exc), status=_error_status(exc), text=text)
    flash(_("Alias saved."), "info")
    return redirect(url_for("directory.alias_detail", source=key))


@directory.post("/aliases/<path:source>/delete")
@login_required
def alias_delete(source: str) -> Page:
    with database().reader() as db:
        alias = _alias_in_scope(db, source)
        key, display = alias.address, alias.display_address
    with unit_of_work() as ctx:
        aliases.remove(ctx, key)
    flash(_("Alias %(address)s removed.", address=display), "info")
    return redirect(url_for("directory.alias_list"))
