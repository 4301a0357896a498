"""`muninet plan|nas|subscriber|sessions|usage` through the installed command (few calls)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from test_cli import ok, refused

Cli = Callable[..., subprocess.CompletedProcess[str]]


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
