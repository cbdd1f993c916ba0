"""The runs admin in a real browser (Playwright driving Debian's Chromium): sign in, filter the
list, and watch a run's progress live on its page."""
from __future__ import annotations

import re

from scheduler.enqueue import enqueue
from tests.helpers import PASSWORD, load_run, make_user, wait_for_state


def _sign_in(page, live_server: str, path: str) -> None:
    page.goto(live_server + path)
    assert "/login" in page.url  # sent to the form first
    page.fill("#email", "ops@example.com")
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(live_server + path) + "$"))


def test_sign_in_filter_and_watch_a_run_to_the_end(app, browser, live_server, worker, beats):
    make_user(app, "ops@example.com", "operator")
    with app.app_context():
        ok = enqueue("demo.noop", ["alpha"], trigger="web")
        bad = enqueue("demo.fail", [], {"message": "beta broke"}, trigger="cli")
    done = wait_for_state(app, ok, "succeeded")
    failed = wait_for_state(app, bad, "failed")  # and its failure alert's mail.send run

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors include CSP violations; the favicon the app does not have is no error.
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and not
            msg.location.get("url", "").endswith("/favicon.ico") else None)
    _sign_in(page, live_server, "/admin/runs")
    rows = page.locator("table.runs tbody tr")
    assert page.locator(f"#run-{done.id}").is_visible()
    assert page.locator(f"#run-{failed.id}").is_visible()

    # Filter by state: only the failed run is left, and the form keeps the choice.
    page.get_by_label("failed").check()
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"state=failed"))
    assert rows.count() == 1
    assert rows.first.get_attribute("id") == f"run-{failed.id}"
    assert "DemoFailure" in rows.first.inner_text()
    assert page.get_by_label("failed").is_checked()

    # A long task due in 2 s: its page opens while it is still scheduled, then shows it
    # running and finishing without a reload.
    with app.app_context():
        task_id = enqueue("demo.long_task", [], {"steps": 40}, trigger="web", countdown=2)
    run_id = load_run(app, task_id).id
    page.goto(f"{live_server}/admin/runs/{run_id}")
    page.evaluate("window.sameDocument = true")
    beats.start()  # its dispatcher releases the run when due
    page.locator("#run-state", has_text="succeeded").wait_for(timeout=60_000)
    assert page.locator("#run-percent").inner_text() == "100%"
    assert page.eval_on_selector("#run-bar", "bar => bar.value") == 100
    assert page.locator("#run-status").inner_text() == "Task completed!"
    assert page.evaluate("window.sameDocument") is True  # no reload happened
    # The actions follow the state: Cancel went away, Re-run came.
    assert page.get_by_role("button", name="Cancel").is_hidden()
    rerun = page.get_by_role("button", name="Re-run")
    assert rerun.is_visible()

    # Re-run asks first, then posts with the page's CSRF token and says what it did.
    page.once("dialog", lambda dialog: dialog.accept())
    rerun.click()
    page.locator(".flash", has_text=f"Run {run_id} re-run as run").wait_for()
    assert page.locator("text=Started again as").count() == 1
    assert errors == []
    page.close()
