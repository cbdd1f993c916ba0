"""The seed's demo pages: the e-mail form, the long task with live progress bars, and its
status endpoint."""
from __future__ import annotations

from typing import Any

from flask import (Blueprint, current_app, flash, jsonify, redirect, render_template, request,
                   session, url_for)
from sqlalchemy import select

from models import JobRun, RunState, db
from scheduler.enqueue import BrokerUnavailable, enqueue
from scheduler.mail.outbox import EmailError, send_email

bp = Blueprint("demo", __name__)

#: /status state names for our run states (the seed's Celery names where it has them).
_STATUS_NAMES = {
    RunState.SCHEDULED: "PENDING",
    RunState.QUEUED: "PENDING",
    RunState.RUNNING: "PROGRESS",
    RunState.RETRYING: "RETRY",
    RunState.SUCCEEDED: "SUCCESS",
    RunState.FAILED: "FAILURE",
    RunState.REVOKED: "REVOKED",
    RunState.LOST: "LOST",
    RunState.SKIPPED: "SKIPPED",
}
PENDING = {"state": "PENDING", "current": 0, "total": 1, "status": "Pending..."}


DEMO_SUBJECT = "Hello from Flask"
DEMO_BODY = "This is a test email sent from a background Celery task."
#: Longest address the form takes (RFC 5321's path limit, as scheduler.outbox).
MAX_ADDRESS_CHARS = 254


@bp.get("/")
def index() -> str:
    return render_template("index.html", email=session.get("email", ""))


@bp.post("/")
def send_demo_email():
    """The seed's form: "Send" now, or "Send in 1 minute"; the address is kept in the session."""
    address = request.form.get("email", "")
    later = request.form.get("submit") == "Send in 1 minute"
    try:
        if len(address.strip()) > MAX_ADDRESS_CHARS:
            # Not echoed: the message goes into the session cookie.
            raise EmailError(f"invalid e-mail address: longer than {MAX_ADDRESS_CHARS} "
                             "characters")
        send_email(address, DEMO_SUBJECT, DEMO_BODY,
                   countdown=current_app.config["DEMO_EMAIL_DELAY_S"] if later else None)
    except EmailError as exc:
        db.session.rollback()
        # The form again, answered 400: the input was refused, nothing was sent.
        flash(f"Not sent: {exc}", "error")
        return render_template("index.html", email=session.get("email", "")), 400
    db.session.commit()
    session["email"] = address.strip()
    if later:
        flash(f"An email will be sent to {address.strip()} in one minute", "info")
    else:
        flash(f"Sending email to {address.strip()}", "info")
    return redirect(url_for("demo.index"))


@bp.post("/longtask")
def longtask():
    """The seed's protocol: 202, `{}` and a Location, for its jQuery client and `curl -X POST`,
    which send no CSRF token: exempt (app/__init__.py), as it reads no session and needs no
    sign-in, so a forged request can do nothing a plain one cannot."""
    try:
        task_id = enqueue("demo.long_task", trigger="web")
    except BrokerUnavailable:
        return jsonify(error="broker_unavailable",
                       message="The task queue is not reachable; the task was not started."), 503
    return jsonify({}), 202, {"Location": url_for("demo.task_status", task_id=task_id)}


@bp.get("/status/<task_id>")
def task_status(task_id: str):
    run = db.session.scalar(select(JobRun).where(JobRun.task_id == task_id[:255]))
    return jsonify(status_document(run))


def status_document(run: JobRun | None) -> dict[str, Any]:
    """The seed's /status shapes, read from the run row."""
    if run is None:
        return dict(PENDING)
    state = RunState(run.state)
    name = _STATUS_NAMES[state]
    if name == "PENDING":
        return dict(PENDING)
    if state is RunState.SUCCEEDED:
        result = run.result
        if isinstance(result, dict) and "result" in result:
            return {"state": name, "current": result.get("current", 1),
                    "total": result.get("total", 1),
                    "status": result.get("status", "Task completed!"),
                    "result": result["result"]}
        return {"state": name, "current": 1, "total": 1, "status": "Task completed!",
                "result": result}
    if state is RunState.FAILED:
        return {"state": name, "current": 1, "total": 1,
                "status": run.error_message or run.error_type or "failed"}
    if state in (RunState.RUNNING, RunState.RETRYING):
        status = run.progress_message or ("Retrying..." if name == "RETRY" else "Running...")
        return {"state": name, "current": run.progress_current or 0,
                "total": run.progress_total or 1, "status": status}
    return {"state": name, "current": run.progress_current or 0,
            "total": run.progress_total or 1,
            "status": run.error_message or state.value.capitalize()}
