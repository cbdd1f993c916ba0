"""The demo page in a real browser (Playwright driving Debian's Chromium)."""
from __future__ import annotations


def test_two_long_calculations_reach_100_percent(browser, live_server, worker):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_server + "/")
    button = page.get_by_role("button", name="Start Long Calculation")
    button.click()
    button.click()
    jobs = page.locator("#progress .job")
    jobs.nth(1).wait_for()
    assert jobs.count() == 2
    for i in range(2):
        job = jobs.nth(i)
        job.locator(".result", has_text="Result: 42").wait_for(timeout=60_000)
        assert job.locator(".percent").inner_text() == "100%"
    assert errors == []
    page.close()
