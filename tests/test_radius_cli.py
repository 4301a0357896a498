"""`muninet plan|nas|subscriber|sessions|usage` through the installed command (few calls)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy import select, update
from test_cli import ok, refused

from provisioning.models import RadAcct
from provisioning.models.radius import RadAcctMonthly
from provisioning.services import members, plans, subscribers
from provisioning.services.context import ServiceContext

Cli = Callable[..., subprocess.CompletedProcess[str]]
Unit = Callable[[], AbstractContextManager[ServiceContext]]


def test_plans_nas_subscribers_and_usage(cli: Cli) -> None:
    ok(cli("member", "add", "glusk", "--name", "Gmina Głusk", "--max-lines", "1"))
    out = ok(
        cli(
            "plan", "add", "dsl-8", "--down", "8M", "--up", "1M", "--data-cap", "50G",
            "--idle-timeout", "10m", "--sessions", "1",
        )
    )  # fmt: skip
    assert "dsl-8: pppoe, 8M/1M, 50G" in out
    out = ok(
        cli("nas", "add", "mt-1", "--address", "192.0.2.1", "--vendor", "mikrotik", "--generate")
    )
    assert "secret: " in out
    out = ok(
        cli(
            "subscriber", "add", "szkola.glusk", "--member", "glusk", "--plan", "dsl-8",
            "--generate", "--ip", "10.20.0.5", "--bind", "AA:BB:CC:DD:EE:FF",
            "--expires", "2030-12-31",
        )
    )  # fmt: skip
    password = out.split("password: ")[1].strip()
    assert len(password) == 16
    listed = json.loads(ok(cli("subscriber", "list", "--json")))
    assert listed == [
        {
            "username": "szkola.glusk",
            "member": "glusk",
            "plan": "dsl-8",
            "status": "active",
            "status_reason": "",
            "chap": False,
            "static_ip": "10.20.0.5",
            "pool": None,
            "calling_station_id": "aa:bb:cc:dd:ee:ff",
            "expires_on": "2030-12-31",
            "notes": "",
            "created_at": listed[0]["created_at"],
        }
    ]
    assert password not in json.dumps(listed)
    # The package allows one line; the refusal is one line, exit 1, no traceback.
    refused(
        cli(
            "subscriber", "add", "second", "--member", "glusk", "--plan", "dsl-8",
            "--password-stdin", input="another password 1\n",
        ),
        "all 1 subscriber lines",
    )  # fmt: skip
    refused(cli("plan", "add", "bad", "--down", "fast"), "not a rate")
    refused(cli("subscriber", "suspend", "nobody"), "no subscriber 'nobody'")
    ok(cli("subscriber", "suspend", "szkola.glusk", "--reason", "unpaid"))
    usage = json.loads(ok(cli("usage", "--month", "2026-01", "--json")))
    assert usage == {"month": "2026-01", "subscribers": [], "members": {}}


def test_usage_of_one_subscriber_by_day(cli: Cli, unit: Unit) -> None:
    with unit() as ctx:
        members.create(ctx, "glusk", "Gmina Głusk", max_lines=2)
        plans.create(ctx, "dsl-8", download_bps=8_000_000, upload_bps=1_000_000)
        subscribers.create(ctx, "szkola.glusk", "glusk", "dsl-8", password="a long password 1")
        # Two sessions on 3 March, one on 5 March (local time), one in April: not counted.
        for number, (day, month, seconds, down) in enumerate(
            [(3, 3, 600, 2**20), (3, 3, 60, 2**20), (5, 3, 30, 2**30), (1, 4, 99, 7)]
        ):
            start = int(datetime(2026, month, day, 12, 0).timestamp())
            ctx.session.add(
                RadAcct(
                    acctsessionid=f"s{number}",
                    acctuniqueid=f"u{number}",
                    username="szkola.glusk",
                    nasipaddress="192.0.2.1",
                    acctstarttime=start,
                    acctupdatetime=start + seconds,
                    acctstoptime=start + seconds,
                    acctsessiontime=seconds,
                    acctinputoctets=1000,
                    acctoutputoctets=down,
                )
            )
    daily = json.loads(
        ok(cli("usage", "--subscriber", "Szkola.Glusk", "--month", "2026-03", "--json"))
    )
    assert daily["username"] == "szkola.glusk"
    assert {
        day: (r["sessions"], r["session_time"], r["output_octets"])
        for day, r in daily["days"].items()
    } == {
        "2026-03-03": (2, 660, 2 * 2**20),
        "2026-03-05": (1, 30, 2**30),
    }
    table = ok(cli("usage", "--subscriber", "szkola.glusk", "--month", "2026-03"))
    lines = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert lines["2026-03-03"][1:] == ["2", "11m", "2M", "2.0K", "2.0M"], table
    assert lines["2026-03-05"][1] == "1" and lines["2026-03-05"][3] == "1G", table
    refused(cli("usage", "--subscriber", "nobody"), "no subscriber 'nobody'")


def test_rebuild_rollup_recomputes_it_from_radacct(cli: Cli, unit: Unit) -> None:
    start = int(datetime(2026, 3, 3, 12, 0).timestamp())
    with unit() as ctx:
        for number, who in enumerate(["ala", "ala", "bob"]):
            ctx.session.add(
                RadAcct(
                    acctsessionid=f"r{number}",
                    acctuniqueid=f"ru{number}",
                    username=who,
                    nasipaddress="192.0.2.1",
                    acctstarttime=start,
                    acctupdatetime=start + 60,
                    acctstoptime=start + 60,
                    acctsessiontime=60,
                    acctinputoctets=10,
                    acctoutputoctets=20,
                )
            )
    with unit() as ctx:  # a rollup gone wrong, e.g. kept in another time zone
        ctx.session.execute(update(RadAcctMonthly).values(session_time=1))
    assert ok(cli("radius", "rebuild-rollup")).strip() == (
        "usage rollup rebuilt: 2 subscriber-month row(s)"
    )
    with unit() as ctx:
        rows = ctx.session.execute(
            select(RadAcctMonthly.username, RadAcctMonthly.sessions, RadAcctMonthly.session_time)
        ).all()
        assert sorted(map(tuple, rows)) == [("ala", 2, 120), ("bob", 1, 60)]
