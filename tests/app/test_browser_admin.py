"""The schedules and outbox admin pages in a real browser (Playwright driving Debian's
Chromium), against the app served over HTTP, signed in through the /login form."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from models import Email, db
from scheduler.beat import schedules
from scheduler.mail import outbox
from tests.helpers import PASSWORD, make_user


@pytest.fixture
def errors() -> list[str]:
    """Script errors and console errors (CSP violations, failed loads) of the page."""
    return []


@pytest.fixture
def page(app, services, browser, live_server, errors):
    """A fresh browser context, signed in as an operator through the /login form."""
    make_user(app, "ops@example.com", "operator")
    context = browser.new_context(base_url=live_server)
    page = context.new_page()

    def console(msg) -> None:
        # Chromium asks for /favicon.ico on its own; the app has none.
        if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico"):
            errors.append(msg.text)

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", console)
    page.goto("/login")
    page.get_by_label("E-mail", exact=True).fill("ops@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/admin/")
    yield page
    context.close()
    assert errors == []  # no script error and no CSP violation


def _enabled(app, name: str) -> bool:
    with app.app_context():
        return schedules.get(name).enabled


def test_the_enabled_switch_persists(app, page):
    with app.app_context():
        schedules.create("nightly", {"task": "demo.noop", "cron": "0 2 * * *"})
    page.goto("/admin/schedules")
    switch = page.get_by_label("Enabled: nightly")
    expect(switch).to_be_checked()
    with page.expect_navigation():
        switch.click()  # the form submits itself on change
    expect(page.get_by_text("Schedule nightly disabled.")).to_be_visible()
    assert _enabled(app, "nightly") is False
    page.reload()
    expect(page.get_by_label("Enabled: nightly")).not_to_be_checked()
    with page.expect_navigation():
        page.get_by_label("Enabled: nightly").click()
    page.reload()
    expect(page.get_by_label("Enabled: nightly")).to_be_checked()
    assert _enabled(app, "nightly") is True


def test_the_new_schedule_form_previews_the_next_fires_while_typing(app, page):
    page.goto("/admin/schedules/new")
    description = page.locator("#preview-description")
    fires = page.locator("#preview-next li")
    page.get_by_label("Timing", exact=True).select_option("crontab")
    expect(page.get_by_label("Every", exact=True)).to_be_hidden()
    page.get_by_label("Time zone", exact=True).fill("Europe/Berlin")
    page.get_by_label("Cron", exact=True).press_sequentially("0 2 * * *")
    expect(description).to_have_text("every day at 02:00 Europe/Berlin")
    expect(fires).to_have_count(5)
    expect(fires.first).to_contain_text("02:00:00 Europe/Berlin")
    page.get_by_label("Cron", exact=True).fill("0 25 * * *")
    expect(description).to_contain_text("hour 25 is out of range 0-23")
    expect(fires).to_have_count(0)
    page.get_by_label("Cron", exact=True).fill("*/15 * * * *")
    expect(description).to_have_text("every 15 minutes Europe/Berlin")
    # The form creates what the preview showed.
    page.get_by_label("Name", exact=True).fill("quarterly")
    page.get_by_label("Task", exact=True).select_option("demo.noop")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_text("Created schedule quarterly: every 15 minutes Europe/Berlin."))\
        .to_be_visible()
    with app.app_context():
        assert schedules.get("quarterly").cron == "*/15 * * * *"


def test_cancel_a_scheduled_email_from_the_outbox(app, page):
    with app.app_context():
        email_id = outbox.send_email("later@example.com", "Later", "body", countdown=3600).id
        db.session.commit()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/admin/emails")
    row = page.locator(f"#email-{email_id}")
    expect(row.locator(".badge")).to_have_text("scheduled")
    row.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text(f"E-mail {email_id} cancelled: it will not be sent.")).to_be_visible()
    expect(page.locator(f"#email-{email_id} .badge")).to_have_text("cancelled")
    with app.app_context():
        assert db.session.get(Email, email_id).state == "cancelled"


def test_the_html_body_renders_in_a_sandbox_without_running_scripts(app, page, errors):
    html = ("<p id='hello'>Hello <b>frame</b></p>"
            "<script>document.body.insertAdjacentHTML('beforeend', '<p>script ran</p>')</script>")
    with app.app_context():
        email_id = outbox.send_email("ada@example.com", "Framed", "text", html=html,
                                     countdown=3600).id
        db.session.commit()
    # Chromium says why the script does not run.
    with page.expect_console_message(lambda m: "Blocked script execution" in m.text
                                     and f"/admin/emails/{email_id}/html" in m.text
                                     and "sandboxed" in m.text) as blocked:
        page.goto(f"/admin/emails/{email_id}")
    frame = page.frame_locator("iframe.mail-html")
    expect(frame.locator("#hello")).to_have_text("Hello frame")
    expect(frame.get_by_text("script ran")).to_have_count(0)
    errors.remove(blocked.value.text)  # expected; nothing else may go wrong
