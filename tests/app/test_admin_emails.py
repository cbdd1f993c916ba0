"""The outbox admin pages: the list with filters and keyset paging, one e-mail with a safe
preview, and the operator's actions (cancel, resend)."""
from __future__ import annotations

import re

from sqlalchemy import func, select, text

from models import Email, JobRun, db
from scheduler.mail import outbox
from tests.helpers import csrf_token, wait_for

XSS_SUBJECT = '"><img src=x onerror=alert(1)>'
XSS_TEXT = "<script>alert(1)</script>"


def _send(app, to, subject: str = "Report", body: str = "Body", html: str | None = None,
          countdown: float | None = 3600) -> int:
    """An outbox e-mail; by default due in an hour, so it waits in PostgreSQL."""
    with app.app_context():
        email = outbox.send_email(to, subject, body, html=html, countdown=countdown)
        db.session.commit()
        return email.id


def _set(app, email_id: int, **columns) -> None:
    """Put an e-mail in a state a worker would have left it in (sent, failed, uncertain)."""
    sets = ", ".join(f"{k} = :{k}" for k in columns)
    with app.app_context():
        db.session.execute(text(f"UPDATE emails SET {sets} WHERE id = :id"),
                           {"id": email_id, **columns})
        db.session.commit()


def _email(app, email_id: int) -> Email:
    with app.app_context():
        email = db.session.get(Email, email_id)
        db.session.expunge(email)
        return email


def _count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Email))


def _page(client, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 200, (path, resp.status_code)
    return resp.get_data(as_text=True)


def _post(client, path: str, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/emails"), **data})


def _listed(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="email-(\d+)"', page)]


# --- the list --------------------------------------------------------------------------------

def test_the_outbox_lists_newest_first_with_every_column(app, operator_client):
    first = _send(app, ["ada@example.com", "bob@example.com"], "First")
    second = _send(app, "cy@example.com", "Second")
    _set(app, second, state="failed", needs_review=True, attempts=1,
         last_error=outbox.UNCERTAIN + " (TimeoutError)")
    page = _page(operator_client, "/admin/emails")
    assert _listed(page) == [second, first]
    row = page[page.index(f'id="email-{first}"'):]
    row = row[:row.index("</tr>")]
    assert "ada@example.com, bob@example.com" in row and "First" in row
    assert 'class="badge scheduled"' in row and " UTC" in row and ">Cancel<" in row
    row = page[page.index(f'id="email-{second}"'):]
    row = row[:row.index("</tr>")]
    assert 'class="badge failed"' in row and ">needs review<" in row
    assert "delivery uncertain" in row and f'href="/admin/emails/{second}">Review<' in row


def test_filters_by_state_recipient_text_and_needs_review(app, operator_client):
    ada = _send(app, "ada@example.com")
    bob = _send(app, "bob_100%@example.com")
    sent = _send(app, "carol@example.com")
    _set(app, sent, state="sent", sent_at=None)
    review = _send(app, "dan@example.com")
    _set(app, review, state="failed", needs_review=True)
    assert _listed(_page(operator_client, "/admin/emails?state=scheduled")) == [bob, ada]
    assert _listed(_page(operator_client, "/admin/emails?state=sent")) == [sent]
    assert _listed(_page(operator_client, "/admin/emails?to=ADA@")) == [ada]
    # LIKE wildcards in the text match literally.
    assert _listed(_page(operator_client, "/admin/emails?to=_100%25")) == [bob]
    assert _listed(_page(operator_client, "/admin/emails?to=%25")) == [bob]
    assert _listed(_page(operator_client, "/admin/emails?review=1")) == [review]
    assert _listed(_page(operator_client, "/admin/emails?review=1&state=sent")) == []
    page = _page(operator_client, "/admin/emails?state=bogus&to=nobody")
    assert "No e-mails match these filters." in page


def test_keyset_paging_by_id(app, operator_client):
    with app.app_context():
        ids = [outbox.send_email(f"p{i}@example.com", f"Page {i}", "x", countdown=3600).id
               for i in range(120)]
        db.session.commit()
    newest = ids[::-1]
    page = _page(operator_client, "/admin/emails")
    assert _listed(page) == newest[:50]
    older = re.search(r'href="([^"]+)" rel="next"', page).group(1).replace("&amp;", "&")
    assert older == f"/admin/emails?before={newest[49]}" and "offset" not in page
    page = _page(operator_client, older)
    assert _listed(page) == newest[50:100]
    newer = re.search(r'href="([^"]+)" rel="prev"', page).group(1).replace("&amp;", "&")
    last = re.search(r'href="([^"]+)" rel="next"', page).group(1).replace("&amp;", "&")
    assert _listed(_page(operator_client, newer)) == newest[:50]
    page = _page(operator_client, last)
    assert _listed(page) == newest[100:]
    assert 'rel="next"' not in page
    # New mail arriving meanwhile does not shift the pages (no OFFSET).
    _send(app, "late@example.com")
    assert _listed(_page(operator_client, older)) == newest[50:100]


def test_paging_links_keep_the_filters(app, operator_client):
    with app.app_context():
        for i in range(55):
            outbox.send_email(f"keep{i}@example.com", "Keep", "x", countdown=3600)
        outbox.send_email("other@example.com", "Other", "x", countdown=3600)
        db.session.commit()
    page = _page(operator_client, "/admin/emails?to=keep&state=scheduled")
    older = re.search(r'href="([^"]+)" rel="next"', page).group(1).replace("&amp;", "&")
    assert "to=keep" in older and "state=scheduled" in older
    page = _page(operator_client, older)
    assert len(_listed(page)) == 5 and "other@" not in page


def test_viewers_see_no_action_and_cannot_act(app, viewer_client):
    scheduled = _send(app, "ada@example.com")
    failed = _send(app, "bob@example.com")
    _set(app, failed, state="failed")
    for path in ("/admin/emails", f"/admin/emails/{scheduled}", f"/admin/emails/{failed}"):
        page = _page(viewer_client, path)
        assert "method=\"post\" action=\"/admin/emails" not in page
        assert ">Cancel<" not in page and ">Resend<" not in page
    assert _post(viewer_client, f"/admin/emails/{scheduled}/cancel").status_code == 403
    assert _post(viewer_client, f"/admin/emails/{failed}/resend").status_code == 403
    assert _email(app, scheduled).state == "scheduled" and _count(app) == 2


# --- cancel ----------------------------------------------------------------------------------

def test_cancel_a_scheduled_email(app, operator_client):
    email_id = _send(app, "ada@example.com")
    resp = _post(operator_client, f"/admin/emails/{email_id}/cancel")
    assert resp.status_code == 302 and resp.headers["Location"] == "/admin/emails"
    page = operator_client.get("/admin/emails").get_data(as_text=True)
    assert f"E-mail {email_id} cancelled: it will not be sent." in page
    email = _email(app, email_id)
    assert email.state == "cancelled"
    with app.app_context():
        assert db.session.get(JobRun, email.run_id).state == "revoked"


def test_cancelling_a_sent_email_says_why(app, operator_client):
    email_id = _send(app, "ada@example.com")
    _set(app, email_id, state="sent")
    resp = _post(operator_client, f"/admin/emails/{email_id}/cancel", back="detail")
    assert resp.headers["Location"] == f"/admin/emails/{email_id}"
    page = operator_client.get(resp.headers["Location"]).get_data(as_text=True)
    assert f"E-mail {email_id} cannot be cancelled: it was already sent" in page
    assert _email(app, email_id).state == "sent"
    for state, why in (("sending", "it is being sent right now"),
                       ("cancelled", "it was already cancelled")):
        _set(app, email_id, state=state)
        resp = _post(operator_client, f"/admin/emails/{email_id}/cancel")
        page = operator_client.get(resp.headers["Location"]).get_data(as_text=True)
        assert why in page and _email(app, email_id).state == state
    assert _post(operator_client, "/admin/emails/999999/cancel").status_code == 404


# --- resend ----------------------------------------------------------------------------------

def test_resend_a_sent_email_delivers_a_new_copy(app, operator_client, worker, smtp):
    email_id = _send(app, "twice@example.com", "Monthly report", "Text body",
                     html="<p>HTML body</p>", countdown=None)
    wait_for(lambda: _email(app, email_id).state == "sent", timeout=30, message="the e-mail")
    resp = _post(operator_client, f"/admin/emails/{email_id}/resend", key="k" * 20)
    with app.app_context():
        copy_id = db.session.scalar(select(func.max(Email.id)))
    assert copy_id != email_id
    assert resp.headers["Location"] == f"/admin/emails/{copy_id}"
    page = operator_client.get(resp.headers["Location"]).get_data(as_text=True)
    assert f"E-mail {email_id} resent as a new e-mail, {copy_id}." in page
    wait_for(lambda: _email(app, copy_id).state == "sent", timeout=30, message="the copy")
    copy = _email(app, copy_id)
    assert (copy.recipients, copy.subject, copy.text_body, copy.html_body) == (
        ["twice@example.com"], "Monthly report", "Text body", "<p>HTML body</p>")
    wait_for(lambda: len(smtp.to("twice@example.com")) == 2, timeout=30, message="two copies")
    # The same form submitted again (a double click) makes no third e-mail.
    _post(operator_client, f"/admin/emails/{email_id}/resend", key="k" * 20)
    assert _count(app) == 2


def test_resend_of_an_uncertain_delivery_needs_an_explicit_confirmation(
        app, operator_client, worker, smtp):
    email_id = _send(app, "maybe@example.com")
    _set(app, email_id, state="failed", needs_review=True,
         last_error=outbox.UNCERTAIN + " (the worker stopped while sending)")
    page = _page(operator_client, f"/admin/emails/{email_id}")
    assert "delivery was uncertain; the recipient may get it twice" in page
    assert 'name="confirm_uncertain" value="1" required' in page
    resp = _post(operator_client, f"/admin/emails/{email_id}/resend")
    page = operator_client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Not resent: delivery was uncertain; the recipient may get it twice." in page
    assert _count(app) == 1 and _email(app, email_id).needs_review
    resp = _post(operator_client, f"/admin/emails/{email_id}/resend", confirm_uncertain="1")
    assert resp.status_code == 302 and _count(app) == 2
    original = _email(app, email_id)
    assert original.state == "failed" and not original.needs_review  # a person decided
    with app.app_context():
        copy_id = db.session.scalar(select(Email.id).where(Email.id != email_id))
    wait_for(lambda: _email(app, copy_id).state == "sent", timeout=30, message="the copy")
    assert len(smtp.to("maybe@example.com")) == 1


def test_resend_is_refused_for_waiting_emails(app, operator_client):
    email_id = _send(app, "ada@example.com")
    resp = _post(operator_client, f"/admin/emails/{email_id}/resend")
    page = operator_client.get(resp.headers["Location"]).get_data(as_text=True)
    assert f"Not resent: e-mail {email_id} cannot be resent: it is scheduled" in page
    assert _count(app) == 1
    assert _post(operator_client, "/admin/emails/999999/resend").status_code == 404


# --- one e-mail ------------------------------------------------------------------------------

def test_detail_shows_every_field_the_run_and_a_safe_preview(app, operator_client):
    html = "<p>Hello <b>there</b></p><script>alert(1)</script>"
    email_id = _send(app, "ada@example.com", "Report", "Line 1\nLine 2", html=html)
    email = _email(app, email_id)
    page = _page(operator_client, f"/admin/emails/{email_id}")
    for label in ("To", "Subject", "State", "Needs review", "Send at", "Claimed at", "Sent at",
                  "Attempts", "Last error", "Run", "Idempotency key", "Created", "Updated"):
        assert f"<dt>{label}</dt>" in page, label
    assert f'href="/admin/runs/{email.run_id}"' in page
    assert '<pre class="body mail-text">Line 1\nLine 2</pre>' in page
    assert (f'<iframe class="mail-html" sandbox="" src="/admin/emails/{email_id}/html"'
            in page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    frame = operator_client.get(f"/admin/emails/{email_id}/html")
    assert frame.status_code == 200 and frame.mimetype == "text/html"
    assert frame.get_data(as_text=True) == html
    csp = frame.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; style-src 'unsafe-inline'; img-src data:")
    assert "script-src" not in csp and frame.headers["X-Frame-Options"] == "SAMEORIGIN"
    # The page that embeds it keeps the strict defaults.
    assert page and operator_client.get(f"/admin/emails/{email_id}").headers[
        "X-Frame-Options"] == "DENY"


def test_an_email_without_html_has_no_frame(app, operator_client):
    email_id = _send(app, "ada@example.com")
    assert "<iframe" not in _page(operator_client, f"/admin/emails/{email_id}")
    assert operator_client.get(f"/admin/emails/{email_id}/html").status_code == 404
    assert operator_client.get("/admin/emails/999999").status_code == 404


def test_subjects_and_bodies_are_escaped(app, operator_client):
    email_id = _send(app, "ada@example.com", XSS_SUBJECT, XSS_TEXT, html=XSS_TEXT)
    _set(app, email_id, last_error=XSS_SUBJECT)
    for path in ("/admin/emails", f"/admin/emails/{email_id}"):
        page = _page(operator_client, path)
        assert "<img src=x" not in page and "<script>alert" not in page
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
