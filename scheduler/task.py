"""The task base class: an app context per run, and a job record for every run."""
from __future__ import annotations

import contextlib
import os
import socket
import time
import traceback
from datetime import datetime, timedelta, timezone
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.utils import uuid
from flask import current_app, has_app_context

from models import db, utcnow
from models.states import RunState
from scheduler import payload, recorder, records
from scheduler.mail import alerts
from scheduler.enqueue import PUBLISH_ERRORS, BrokerUnavailable, routed_queue


def _due_time(options: dict[str, Any]) -> datetime | None:
    eta, countdown = options.get("eta"), options.get("countdown")
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    if eta is not None:
        return eta if eta.tzinfo else eta.replace(tzinfo=timezone.utc)
    if countdown:
        return datetime.now(timezone.utc) + timedelta(seconds=float(countdown))
    return None


class FlaskTask(Task):
    """Runs each task body inside a fresh Flask app context and records the run in Postgres."""

    def _app_context(self):
        return self.app.flask_app.app_context()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._app_context():
            request = self.request
            if request.called_directly:
                return self.run(*args, **kwargs)
            rec = recorder.current(db.engine, current_app.config)
            task_id = request.id
            run_id, go = rec.begin(
                task_id,
                self.name,
                args,
                kwargs,
                queue=(request.delivery_info or {}).get("routing_key"),
                host=request.hostname or socket.gethostname(),
                pid=os.getpid(),
                now=utcnow(),
            )
            if not go:
                # Already final: cancelled before it started, or a duplicate delivery.
                raise Ignore()
            request.job_run_id = run_id
            request.progress_written_at = 0.0
            # A late-acknowledged task is acked when this returns: its outcome must be
            # written by then, so a redelivery finds the run final and does not repeat it.
            late = bool(self.acks_late)
            try:
                result = self.run(*args, **kwargs)
            except Retry as exc:
                cause = exc.exc if isinstance(exc.exc, BaseException) else None
                reason = f"{type(cause).__name__}: {cause}" if cause else "retry requested"
                eta = _retry_eta(exc.when)
                rec.finish(task_id, RunState.RETRYING, utcnow(),
                           error_type=type(cause).__name__ if cause else None,
                           error_message=_text(cause), traceback=_format_tb(cause), eta=eta,
                           message=reason + (f"; next attempt at {eta.isoformat()}" if eta
                                             else ""),
                           wait=True)
                raise
            except Reject as exc:
                if exc.requeue:
                    rec.finish(task_id, RunState.QUEUED, utcnow(),
                               message=f"rejected and requeued: {exc.reason}", wait=True)
                else:
                    self._failed(rec, task_id, exc, traceback.format_exc(), late)
                raise
            except Ignore:
                rec.finish(task_id, RunState.SUCCEEDED, utcnow(), result="null",
                           wait=late)
                raise
            except BaseException as exc:
                self._failed(rec, task_id, exc, traceback.format_exc(), late)
                if run_id is not None:
                    alerts.notify_failure(run_id, task_id, self.name,
                                          f"{type(exc).__name__}: {exc}")
                raise
            rec.finish(task_id, RunState.SUCCEEDED, utcnow(),
                       result=payload.capped_json(result), wait=late)
            return result

    @staticmethod
    def _failed(rec: recorder.Recorder, task_id: str, exc: BaseException, tb: str,
                wait: bool) -> None:
        rec.finish(task_id, RunState.FAILED, utcnow(), error_type=type(exc).__name__,
                   error_message=_text(exc), traceback=payload.without_nul(tb),
                   message=payload.without_nul(f"{type(exc).__name__}: {exc}"), wait=wait)

    def update_progress(self, current: int, total: int, message: str | None = None) -> None:
        """Record progress of the running run, at most every PROGRESS_MIN_INTERVAL_S."""
        request = self.request
        last = getattr(request, "progress_written_at", None)
        if last is None:  # not inside a recorded run (called directly)
            return
        now = time.monotonic()
        if current < total and now - last < current_app.config["PROGRESS_MIN_INTERVAL_S"]:
            return
        request.progress_written_at = now
        recorder.current(db.engine, current_app.config).progress(
            request.id, current, total, payload.without_nul(message), utcnow())

    def update_state(self, task_id=None, state=None, meta=None, **kwargs: Any) -> None:
        """Seed-style `update_state(state="PROGRESS", meta={...})` writes progress to the run row.

        There is no Celery result backend; the run row is the state.
        """
        meta = meta or {}
        if state == "PROGRESS" and task_id in (None, self.request.id):
            self.update_progress(meta.get("current", 0), meta.get("total", 1), meta.get("status"))

    def apply_async(self, args=None, kwargs=None, task_id=None, producer=None, link=None,
                    link_error=None, shadow=None, **options: Any):
        """Commit the run row, then publish; a countdown or eta is held in Postgres instead.

        A run due later is stored `scheduled` and published by the leading beat's dispatcher
        when due, so it survives Redis flushes and worker restarts.
        """
        trigger = options.pop("bk_trigger", "external")
        schedule_id = options.pop("bk_schedule_id", None)
        rerun_of_id = options.pop("bk_rerun_of_id", None)
        if options.get("retries"):
            # A retry re-publishes the run that already has its row.
            return super().apply_async(args, kwargs, task_id, producer, link, link_error,
                                       shadow, **options)
        task_id = task_id or uuid()
        due = _due_time(options)
        if due is not None and due <= datetime.now(timezone.utc):
            due = None
        with self._outer_app_context():
            records.create(task_id, self.name, args, kwargs, trigger=trigger,
                           queue=routed_queue(self.app, self.name, args, kwargs, options),
                           eta=due, schedule_id=schedule_id, rerun_of_id=rerun_of_id)
            if due is not None:
                return self.AsyncResult(task_id)
            options.pop("countdown", None)
            options.pop("eta", None)
            try:
                return super().apply_async(args, kwargs, task_id, producer, link, link_error,
                                           shadow, **options)
            except PUBLISH_ERRORS as exc:
                records.publish_failed(task_id, exc)
                raise BrokerUnavailable(str(exc)) from exc

    def publish(self, task_id: str, args: Any, kwargs: Any, **options: Any):
        """Hand a run that already has its row to the broker (the dispatcher's way)."""
        return super().apply_async(args, kwargs, task_id, **options)

    def _outer_app_context(self):
        """The caller's app context if it has one (a view, a CLI command), else our own."""
        return contextlib.nullcontext() if has_app_context() else self._app_context()


def _retry_eta(when: Any) -> datetime | None:
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    if isinstance(when, (int, float)):
        return datetime.now(timezone.utc) + timedelta(seconds=when)
    return None


def _format_tb(exc: BaseException | None) -> str | None:
    if exc is None or exc.__traceback__ is None:
        return None
    return payload.without_nul(
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def _text(exc: BaseException | None) -> str | None:
    return payload.without_nul(str(exc)) if exc is not None else None
