"""The e-mail outbox against a real SMTP server, real workers, real beat and Redis."""
from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from celery.utils import uuid
from sqlalchemy import select, text

from models import Email, JobRun, db
from scheduler.mail import outbox
from tests.helpers import CeleryProcess, csrf_token, wait_for


def _email(app, email_id: int) -> Email:
    with app.app_context():
        e = db.session.get(Email, email_id)
        db.session.expunge(e)
        return e


def _send(app, to, **kwargs) -> int:
    with app.app_context():
        email = outbox.send_email(to, kwargs.pop("subject", "Test"), kwargs.pop("text", "Body"),
                                  **kwargs)
        db.session.commit()
        return email.id


def _post_form(client, address: str, button: str):
    return client.post("/", data={"email": address, "submit": button,
                                  "csrf_token": csrf_token(client)}, follow_redirects=True)


def test_send_button_delivers_within_seconds(app, client, worker, smtp):
    page = _post_form(client, "ada@example.com", "Send").get_data(as_text=True)
    assert "Sending email to ada@example.com" in page
    assert 'value="ada@example.com"' in page  # remembered in the session
    [message] = wait_for(lambda: smtp.to("ada@example.com"), timeout=20, message="the e-mail")
    assert message["Subject"] == "Hello from Flask"
    assert "background Celery task" in message.get_content()
    with app.app_context():
        email = db.session.scalar(select(Email))
        assert email.state == "sent" and email.attempts == 1 and email.sent_at is not None
        run = db.session.get(JobRun, email.run_id)
        assert run.task_name == "mail.send" and run.state == "succeeded"
        assert message["Message-ID"] == f"<beatkeeper.email.{email.id}@localhost>"


def test_send_in_one_minute_waits_for_its_delay(app, client, worker, beats, smtp):
    beats.start()
    clicked = datetime.now(timezone.utc)
    page = _post_form(client, "later@example.com", "Send in 1 minute").get_data(as_text=True)
    assert "An email will be sent to later@example.com in one minute" in page
    with app.app_context():
        email = db.session.scalar(select(Email))
        assert email.state == "scheduled"
        # The delay is DEMO_EMAIL_DELAY_S, 60 s in production and 3 s in the tests.
        assert abs((email.send_at - clicked).total_seconds() - 3.0) < 1.0
    wait_for(lambda: smtp.to("later@example.com"), timeout=30, message="the delayed e-mail")
    sent = _email(app, email.id)
    assert sent.state == "sent"
    assert sent.sent_at >= sent.send_at  # never early


@pytest.mark.parametrize("address", [
    "not-an-address", "ada@", "ada@example.com\r\nBcc: victim@example.com",
    "ada@example.com\nSubject: spam", "<script>@example.com", "",
])
def test_bad_addresses_are_refused_with_no_row(app, client, address):
    page = _post_form(client, address, "Send").get_data(as_text=True)
    assert "Not sent: invalid e-mail address" in page
    assert "<script>@" not in page  # escaped if echoed at all
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(Email)) == 0


def test_header_injection_in_the_subject_is_refused(app, services):
    with app.app_context():
        with pytest.raises(outbox.EmailError):
            outbox.send_email("a@example.com", "Hi\r\nBcc: victim@example.com", "body")
        with pytest.raises(outbox.EmailError):
            outbox.send_email(["a@example.com", "b@example.com\r\nX: y"], "Hi", "body")


def test_five_hundred_scheduled_emails_survive_a_redis_flush_and_a_worker_restart(
        app, worker, beats, smtp, services):
    due = datetime.now(timezone.utc) + timedelta(seconds=4)
    with app.app_context():
        ids = [outbox.send_email(f"bulk{i}@example.com", f"Bulk {i}", "hello", send_at=due).id
               for i in range(500)]
        db.session.commit()
    services.redis().flushall()
    worker.stop()
    worker.start(app.extensions["celery"])
    beats.start()

    def bulk_received() -> Counter:
        return Counter(str(m["To"]) for m in list(smtp.messages)
                       if str(m["Subject"]).startswith("Bulk "))

    wait_for(lambda: sum(bulk_received().values()) >= 500, timeout=120, interval=0.5,
             message="500 e-mails")
    time.sleep(2)  # anything sent twice would arrive by now
    received = bulk_received()
    assert set(received) == {f"bulk{i}@example.com" for i in range(500)}
    assert set(received.values()) == {1}
    with app.app_context():
        states = db.session.execute(text(
            "SELECT state, count(*) FROM emails WHERE id = ANY(:ids) GROUP BY state"),
            {"ids": ids}).all()
    assert dict(states) == {"sent": 500}


def test_two_workers_and_a_redelivery_send_one_message(app, worker, services, smtp, tmp_path):
    second = CeleryProcess(services, tmp_path / "second.log", name="second", smtp=smtp)
    second.start(app.extensions["celery"])
    try:
        due = datetime.now(timezone.utc) + timedelta(hours=1)  # not released by anyone
        email_id = _send(app, "once@example.com", send_at=due)
        celery_app = app.extensions["celery"]
        task_id = uuid()
        # The same message delivered twice (a redelivery), plus a copy under another id,
        # racing on two workers.
        for tid in (task_id, task_id, uuid(), uuid()):
            celery_app.send_task("mail.send", args=[email_id], task_id=tid)
        wait_for(lambda: smtp.to("once@example.com"), timeout=20, message="the e-mail")
        time.sleep(2)
        assert len(smtp.to("once@example.com")) == 1
        assert _email(app, email_id).attempts == 1
    finally:
        second.stop()


def test_smtp_down_then_up_delivers_once(app, worker, smtp):
    smtp.stop()
    try:
        email_id = _send(app, "patient@example.com")
        wait_for(lambda: _email(app, email_id).attempts >= 3, timeout=30,
                 message="retries while SMTP is down")
        email = _email(app, email_id)
        assert email.state in ("queued", "sending")
        assert "Connection refused" in email.last_error or "ConnectionRefused" in email.last_error
    finally:
        smtp.start()
    wait_for(lambda: smtp.to("patient@example.com"), timeout=30, message="the e-mail")
    time.sleep(1.5)
    assert len(smtp.to("patient@example.com")) == 1
    email = _email(app, email_id)
    assert email.state == "sent"
    with app.app_context():
        run = db.session.get(JobRun, email.run_id)
        states = [e.state for e in run.events]
    assert states.count("retrying") >= 2 and states[-1] == "succeeded"


def test_no_answer_after_the_message_went_out_is_not_resent(app, worker, smtp):
    # The server takes the message but answers after the client's timeout (5 s in the tests):
    # a retry could deliver it twice, so the e-mail is failed and flagged for a person.
    email_id = _send(app, "slow@example.com")
    wait_for(lambda: _email(app, email_id).state == "failed", timeout=30, message="the timeout")
    email = _email(app, email_id)
    assert email.needs_review and email.attempts == 1
    assert "delivery uncertain" in email.last_error
    time.sleep(2)
    assert len(smtp.to("slow@example.com")) == 1


def test_rejected_recipient_fails_at_once_with_the_server_answer(app, worker, smtp):
    email_id = _send(app, "reject-me@example.com")
    wait_for(lambda: _email(app, email_id).state == "failed", timeout=20, message="failure")
    email = _email(app, email_id)
    assert email.attempts == 1
    assert "550" in email.last_error and "User unknown" in email.last_error
    with app.app_context():
        run = db.session.get(JobRun, email.run_id)
        assert run.state == "failed" and run.error_type == "EmailNotSent"


def test_cancel_before_due_is_never_sent(app, worker, beats, smtp):
    email_id = _send(app, "never@example.com", countdown=2)
    with app.app_context():
        assert outbox.cancel(email_id) is True
        assert outbox.cancel(email_id) is False  # already cancelled
    beats.start()
    time.sleep(5)
    assert smtp.to("never@example.com") == []
    email = _email(app, email_id)
    assert email.state == "cancelled"
    with app.app_context():
        assert db.session.get(JobRun, email.run_id).state == "revoked"


def test_idempotency_key_gives_one_email(app, services):
    first = _send(app, "key@example.com", idempotency_key="order-42", countdown=3600)
    second = _send(app, "key@example.com", idempotency_key="order-42", countdown=3600)
    assert first == second
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(Email)) == 1


def test_a_claimed_email_is_not_resent_and_the_sweep_flags_it(app, worker, smtp):
    # A worker that died after the SMTP server accepted the message leaves it `sending`.
    email_id = _send(app, "limbo@example.com", countdown=3600)
    with app.app_context():
        db.session.execute(text("UPDATE emails SET state = 'sending', attempts = 1, "
                                "claimed_at = now() - interval '1 hour' WHERE id = :id"),
                           {"id": email_id})
        db.session.commit()
    app.extensions["celery"].send_task("mail.send", args=[email_id])
    time.sleep(2)
    assert smtp.to("limbo@example.com") == []
    with app.app_context():
        assert outbox.flag_stuck(600) == 1
        assert outbox.flag_stuck(600) == 0
    email = _email(app, email_id)
    assert email.state == "failed" and email.needs_review
    assert "check before resending" in email.last_error


def test_failure_alerts_at_most_one_per_quiet_period_with_later_ones_folded(
        app, worker, beats, smtp):
    from scheduler.enqueue import enqueue

    beats.start()
    with app.app_context():
        task_ids = [enqueue("demo.fail", [f"alert test {i}"], trigger="web") for i in range(3)]

    def alerts():
        return [m for m in smtp.to("alerts@example.com")
                if any(t in m.get_content() for t in task_ids)]

    first = wait_for(alerts, timeout=20, message="the first alert")[0]
    assert first["Subject"] == "[Beatkeeper] demo.fail failed"
    # The other two failures are folded into one digest at the end of the quiet period (4 s).
    wait_for(lambda: len(alerts()) == 2, timeout=30, message="the digest")
    time.sleep(2)
    assert len(alerts()) == 2
    digest = alerts()[1]
    in_first = {t for t in task_ids if t in first.get_content()}
    in_digest = {t for t in task_ids if t in digest.get_content()}
    assert len(in_first) == 1 and len(in_digest) == 2
    assert in_first | in_digest == set(task_ids)
    assert "/status/" in digest.get_content()
    assert digest["Subject"] == "[Beatkeeper] demo.fail failed 2 more times"


def test_the_smtp_timeout_is_the_connections_own(app, smtp):
    """Two senders in one process (the threads and gevent pools): one waits on a server that
    does not answer, and its timeout must neither leak into other sockets of the process nor
    be taken away from it by another sender."""
    import socket
    import threading

    # Due in an hour: nothing publishes them; the two senders below are the only ones.
    slow = _send(app, "slow-own@example.com", countdown=3600)
    fast = _send(app, "quick@example.com", countdown=3600)
    outcomes: dict[str, outbox.Outcome] = {}

    def deliver(name: str, email_id: int) -> None:
        with app.app_context():
            outcomes[name] = outbox.deliver(email_id, None)

    waiting = threading.Thread(target=deliver, args=("slow", slow))
    waiting.start()
    wait_for(lambda: smtp.to("slow-own@example.com"), timeout=10, message="the slow send")
    assert socket.getdefaulttimeout() is None  # nothing process-wide was changed
    deliver("fast", fast)  # starts and ends while the slow one waits for its answer
    waiting.join(20)
    assert not waiting.is_alive()
    assert outcomes["fast"].state == "sent", (outcomes, [m["To"] for m in smtp.messages])
    # The slow one still timed out after MAIL_TIMEOUT_S (5 s), though another send came and
    # went meanwhile.
    slow_email = _email(app, slow)
    assert slow_email.needs_review and "delivery uncertain" in slow_email.last_error, (
        outcomes["slow"], slow_email.state, slow_email.last_error)
