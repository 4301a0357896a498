"""The SQL FreeRADIUS runs at a login, taken from the rendered query files and run here.

So a test of the check and reply items reads them exactly as FreeRADIUS does,
on SQLite and PostgreSQL, without a FreeRADIUS: the query text comes from
config/templates/freeradius/, its xlat expansions become bound parameters.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.orm import Session

from provisioning.render import render

_XLATS = {
    "%{SQL-User-Name}": ":user",
    "%{control:Muninet-Plan}": ":plan",
    "%{%{control:Muninet-Tier}:-normal}": ":tier",
    "%{client:muninet_vendor}": ":vendor",
}


def rendered_query(template: str, name: str) -> str:
    """The query `name` of a rendered query file, with its xlats as bound parameters."""
    found = re.search(rf'^{name} = "(.*?[^\\])"$', render(template), re.MULTILINE | re.DOTALL)
    assert found, f"{name} not in {template}"
    query = found.group(1).replace("\\\n", " ")
    for xlat, parameter in _XLATS.items():
        query = query.replace(f"'{xlat}'", parameter)
    assert "%{" not in query, query
    return query


def check_items(session: Session, username: str) -> dict[str, str]:
    """A subscriber's own check items, as FreeRADIUS's `sql` instance reads them."""
    query = rendered_query("freeradius/queries.conf.j2", "authorize_check_query")
    rows = session.execute(text(query), {"user": username}).all()
    return {row[2]: row[3] for row in rows}


def plan_items(session: Session, plan_id: int | str) -> dict[str, str]:
    """A plan's check items, as the `muninet_plan` instance reads them."""
    query = rendered_query("freeradius/plan-query.conf.j2", "authorize_check_query")
    rows = session.execute(text(query), {"plan": str(plan_id)}).all()
    return {row[2]: row[3] for row in rows}


def reply_items(
    session: Session, username: str, *, tier: str = "normal", vendor: str = "other"
) -> list[tuple[str, str]]:
    """The reply FreeRADIUS builds: the plan's items, then the subscriber's address or pool."""
    own = check_items(session, username)
    query = rendered_query("freeradius/reply-query.conf.j2", "authorize_reply_query")
    rows = session.execute(
        text(query), {"plan": own["Muninet-Plan"], "tier": tier, "vendor": vendor}
    ).all()
    reply = [(row[2], row[3]) for row in rows]
    if "Muninet-Framed-IP-Address" in own:
        reply.append(("Framed-IP-Address", own["Muninet-Framed-IP-Address"]))
    elif "Muninet-Framed-Pool" in own:
        reply.append(("Framed-Pool", own["Muninet-Framed-Pool"]))
    return reply
