"""End to end in a real browser: Debian's Chromium driven by Playwright, against the
admin served by gunicorn (as in production) over a test database.

Logs in as the superadmin, creates a member, its domain and a mailbox through the
pages, then a plan and a subscriber line (its generated password shown once),
switches to Polish and reads the dashboard in Polish (also at phone width).
Every step leaves a screenshot in $TEST_ARTIFACTS (default: test-artifacts/ in the
repository, git-ignored) under browser/<backend>/. A CSP violation or any other
console error fails the test. Without Chromium or Playwright the test skips on a
developer's machine and fails in CI.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from web import PASSWORD, Unit

from provisioning.services import admins, domains, mailboxes, members, subscribers
from provisioning.services import stats as mail_stats

from conftest import free_port, missing

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture
def admin_url(env: dict[str, str], unit: Unit, tmp_path: Path) -> Iterator[str]:
    """The admin under gunicorn on a free port, plain http, over this test's database."""
    today = date.today()
    with unit() as ctx:
        admins.create(ctx, "root", PASSWORD)
        # Two weeks of mail, so the chart on the screenshots has bars.
        mail_stats.add_counts(
            ctx.session,
            {
                **{
                    (today - timedelta(days=n), "accepted"): 12000 + 970 * (n % 5)
                    for n in range(14)
                },
                **{
                    (today - timedelta(days=n), "rejected"): 1500 + 310 * (n % 3) for n in range(14)
                },
            },
        )
    port = free_port()
    server_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MUNINET_")},
        **env,
        "MUNINET_LISTEN__ADMIN_PORT": str(port),
        # Nothing else runs: every other service is down on the dashboard.
        **{
            f"MUNINET_LISTEN__{name}": str(free_port())
            for name in ("SMTP_PORT", "SUBMISSION_PORT", "SMTPS_PORT", "IMAP_PORT", "IMAPS_PORT")
        },
        "MUNINET_ADMIN__INSECURE_COOKIES": "true",
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(  # our own interpreter
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "admin_ui.wsgi:app",
        ],
        env=server_env,
        cwd=REPO,
        stdout=log,
        stderr=log,
    )
    try:
        wait_for_http(port, process, tmp_path / "gunicorn.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def wait_for_http(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gunicorn did not listen")


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing("chromium (Debian package; /usr/bin/chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright (pip)")
        raise
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_admin_in_a_real_browser(chromium: Any, admin_url: str, backend: str, unit: Unit) -> None:
    from playwright.sync_api import expect

    shots = ARTIFACTS / "browser" / backend
    shots.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )

    def shot(name: str, full: bool = True) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=full)

    def submit() -> None:
        page.locator("main form button[type=submit]").first.click()

    # Log in: the dashboard, in English (the browser's language).
    page.goto(f"{admin_url}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    shot("01-login")
    submit()
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("#service-web .state")).to_have_text("Up")
    expect(page.locator("#service-smtp .state")).to_have_text("Down")
    expect(page.locator("#mail-accepted .n")).to_have_text("12,000")
    assert page.locator("#mail-chart svg rect.bar").count() == 28
    shot("02-dashboard")

    # A member, its domain and a mailbox, through the pages.
    page.goto(f"{admin_url}/members/new")
    page.fill("input[name=slug]", "gamma")
    page.fill("input[name=name]", "Gmina Gamma")
    page.fill("input[name=max_mailboxes]", "5")
    page.fill("input[name=max_lines]", "5")
    shot("03-member-new")
    submit()
    expect(page).to_have_url(f"{admin_url}/members/gamma")
    expect(page.locator(".flash")).to_contain_text("Gmina Gamma")
    shot("04-member")

    page.goto(f"{admin_url}/domains/new")
    page.fill("input[name=name]", "gamma.example")
    page.select_option("select[name=member]", "gamma")
    submit()
    expect(page.locator(".flash").first).to_contain_text("gamma.example")
    shot("05-domain")

    page.goto(f"{admin_url}/mailboxes/new")
    page.fill("input[name=address]", "sekretariat@gamma.example")
    page.select_option("select[name=member]", "gamma")
    page.fill("input[name=display_name]", "Sekretariat Gminy Gamma")
    page.fill("input[name=password]", "a long enough password")
    shot("06-mailbox-new")
    submit()
    expect(page).to_have_url(f"{admin_url}/mailboxes/sekretariat@gamma.example")
    shot("07-mailbox")

    # A plan and a subscriber line of the member; its password is shown once.
    page.goto(f"{admin_url}/plans/new")
    page.fill("input[name=name]", "dom-8m")
    page.fill("input[name=download]", "8M")
    page.fill("input[name=upload]", "1M")
    submit()
    expect(page).to_have_url(f"{admin_url}/plans/dom-8m")
    page.goto(f"{admin_url}/subscribers/new")
    page.fill("input[name=username]", "szkola.gamma")
    page.select_option("select[name=member]", "gamma")
    page.select_option("select[name=plan]", "dom-8m")
    shot("08-subscriber-new")
    submit()
    expect(page.locator("h1")).to_have_text("szkola.gamma")
    line_password = page.locator("code.secret").inner_text()
    assert len(line_password) >= 8
    shot("09-subscriber-password")
    page.locator("main a.button").click()
    expect(page).to_have_url(f"{admin_url}/subscribers/szkola.gamma")

    # Polish, by the switch in the header: the same page, then the dashboard.
    page.locator("header button[name=lang][value=pl]").click()
    expect(page).to_have_url(f"{admin_url}/subscribers/szkola.gamma")
    expect(page.locator("html")).to_have_attribute("lang", "pl")
    page.goto(f"{admin_url}/")
    expect(page.locator("h1")).to_have_text("Pulpit")
    expect(page.locator("#service-web .state")).to_have_text("Działa")
    expect(page.locator("#service-smtp .state")).to_have_text("Nie działa")
    expect(page.locator("#online-subscribers")).to_contain_text("Abonenci połączeni")
    expect(page.locator("main")).to_contain_text("Poczta dzisiaj")
    expect(page.locator("#mail-chart figcaption")).to_contain_text("przyjęte")
    expect(page.locator("#mail-accepted .n")).to_have_text("12\xa0000")  # Polish grouping
    shot("10-dashboard-pl")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    shot("11-dashboard-pl-phone")

    context.close()
    with unit() as ctx:
        assert members.get(ctx.session, "gamma").name == "Gmina Gamma"
        assert domains.get(ctx.session, "gamma.example").member is not None
        box = mailboxes.get(ctx.session, "sekretariat@gamma.example")
        assert box.member.slug == "gamma" and box.display_name == "Sekretariat Gminy Gamma"
        line = subscribers.get(ctx.session, "szkola.gamma")
        assert line.member.slug == "gamma" and line.plan.name == "dom-8m"
    assert sorted(p.name for p in shots.glob("*.png"))[-1] == "11-dashboard-pl-phone.png"
    # Console errors (CSP violations among them) and failed requests; the browser's
    # own favicon request is no error of ours.
    assert [p for p in problems if "404 (NOT FOUND)" not in p] == []
