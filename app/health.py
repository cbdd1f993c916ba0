"""Operations endpoints: `/healthz` (the process is alive), `/readyz` (it can do its work) and
`/metrics` (Prometheus text format).

The metrics are read from PostgreSQL (and Redis / the workers) on every scrape into a
registry built for that scrape: there are many web processes, so a process-global counter
would only know what one of them saw. Every query is keyed (created_at window, the (state, id)
index, the partial index of scheduled runs), as in scheduler.stats.
"""
from __future__ import annotations

import hmac
import time
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import text

from models import db
from scheduler import broker
from scheduler.history import processes, stats

bp = Blueprint("health", __name__)

#: Upper bounds (seconds) of the run duration histogram's buckets.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: The window of the runs-by-state and duration figures, in hours.
WINDOW_H = 24


def _reason(exc: BaseException) -> str:
    """What a check reports: the error type only (messages may name hosts and users)."""
    return type(exc).__name__


# -- liveness and readiness -----------------------------------------------------------------

@bp.get("/healthz")
def healthz():
    """The web process answers; nothing else is touched."""
    return jsonify(status="ok")


def _check_database() -> dict[str, Any]:
    try:
        db.session.execute(text("SELECT 1"))
        return {"ok": True}
    except Exception as exc:
        current_app.logger.warning("readyz: database: %s", exc)
        return {"ok": False, "error": _reason(exc)}
    finally:
        db.session.rollback()


def _check_beat(max_age_s: float) -> dict[str, Any]:
    try:
        age = processes.leader_tick_age(processes.beats())
    except Exception as exc:
        current_app.logger.warning("readyz: beat: %s", exc)
        return {"ok": False, "error": _reason(exc)}
    finally:
        db.session.rollback()
    if age is None:
        return {"ok": False, "error": "no beat leader heartbeat", "max_age_s": max_age_s}
    return {"ok": age < max_age_s, "age_s": round(age, 3), "max_age_s": max_age_s}


def _check_broker(celery_app) -> dict[str, Any]:
    client = broker.redis_client(celery_app.conf.broker_url, broker.BROKER_TIMEOUT_S)
    try:
        client.ping()
        return {"ok": True}
    except Exception as exc:
        current_app.logger.warning("readyz: broker: %s", exc)
        return {"ok": False, "error": _reason(exc)}
    finally:
        client.close()


def _ping_workers(celery_app, limit: int | None = None) -> list[str]:
    """Names of the workers answering a ping within broker.BROKER_TIMEOUT_S (at most `limit`:
    the broadcast returns as soon as that many have answered)."""
    replies = celery_app.control.ping(timeout=broker.BROKER_TIMEOUT_S, limit=limit) or []
    return sorted(node for reply in replies for node in reply)


@bp.get("/readyz")
def readyz():
    """Database, broker, a fresh beat leader heartbeat, one worker answering: 200, else 503.

    Bounded: Redis is given broker.BROKER_TIMEOUT_S, and the workers are asked only when Redis
    answered (a broadcast to a dead broker retries its connection for seconds).
    """
    celery_app = current_app.extensions["celery"]
    started = time.monotonic()
    checks: dict[str, dict[str, Any]] = {"database": _check_database()}
    if checks["database"]["ok"]:
        checks["beat"] = _check_beat(float(current_app.config["READY_BEAT_MAX_AGE_S"]))
    else:
        checks["beat"] = {"ok": False, "error": "database unavailable"}
    checks["broker"] = _check_broker(celery_app)
    if checks["broker"]["ok"]:
        try:
            answered = _ping_workers(celery_app, limit=1)
            checks["workers"] = ({"ok": True, "answered": answered} if answered else
                                 {"ok": False, "error": "no worker answered a ping",
                                  "timeout_s": broker.BROKER_TIMEOUT_S})
        except Exception as exc:
            checks["workers"] = {"ok": False, "error": _reason(exc)}
    else:
        checks["workers"] = {"ok": False, "error": "broker unavailable"}
    ready = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks,
            "took_s": round(time.monotonic() - started, 3)}
    return jsonify(body), 200 if ready else 503


# -- metrics --------------------------------------------------------------------------------

def _authorized() -> bool:
    token = current_app.config.get("METRICS_TOKEN")
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


class _Scrape:
    """A collector whose families are computed once, when the view builds it."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


def _run_families() -> list:
    window = timedelta(hours=WINDOW_H)
    runs = GaugeMetricFamily(
        "beatkeeper_job_runs_24h",
        f"Runs created in the last {WINDOW_H} h, by task and current state.",
        labels=["task", "state"])
    for task, state, n in stats.runs_by_task_and_state(window):
        runs.add_metric([task, state], n)
    histogram = HistogramMetricFamily(
        "beatkeeper_job_run_duration_seconds",
        f"Duration (start to end of the last attempt) of the runs created in the last "
        f"{WINDOW_H} h that succeeded or failed, by task.",
        labels=["task"])
    for task in stats.durations(window, DURATION_BUCKETS):
        buckets = [(repr(bound), n) for bound, n in task.buckets] + [("+Inf", task.count)]
        histogram.add_metric([task.task], buckets, task.total_s)
    pending = GaugeMetricFamily(
        "beatkeeper_job_runs_pending",
        "Runs not finished yet, by state (scheduled: held in PostgreSQL until due; queued: "
        "published, not started).", labels=["state"])
    for state, n in stats.pending_counts().items():
        pending.add_metric([state], n)
    overdue = GaugeMetricFamily(
        "beatkeeper_job_runs_scheduled_overdue",
        "Scheduled runs whose due time has passed (the dispatcher has yet to release them).",
        value=stats.scheduled_overdue())
    return [runs, histogram, pending, overdue]


def _outbox_and_beat_families() -> list:
    outbox = GaugeMetricFamily("beatkeeper_emails_pending",
                               "E-mails in the outbox not sent yet, by state.", labels=["state"])
    for state, n in stats.unsent_emails().items():
        outbox.add_metric([state], n)
    review = GaugeMetricFamily(
        "beatkeeper_emails_needs_review",
        "Failed e-mails whose delivery is uncertain (a person decides).",
        value=stats.emails_needing_review())
    found = processes.beats()
    age = processes.leader_tick_age(found)
    leader_age = GaugeMetricFamily(
        "beatkeeper_beat_leader_tick_age_seconds",
        "Seconds since the leading beat's last heartbeat (+Inf when no beat ever led).",
        value=float("inf") if age is None else age)
    beats_alive = GaugeMetricFamily(
        "beatkeeper_beats_alive",
        f"Beat processes with a heartbeat fresher than {processes.BEAT_STALE_S:g} s, by role.",
        labels=["role"])
    for role, n in processes.beats_alive(found).items():
        beats_alive.add_metric([role], n)
    return [outbox, review, leader_age, beats_alive]


def _broker_families(celery_app) -> list:
    """Queue depths and workers online; zeros (and broker_up 0) when Redis is down."""
    up = GaugeMetricFamily("beatkeeper_broker_up",
                           "1 when the broker (Redis) answered this scrape, else 0.")
    depth = GaugeMetricFamily("beatkeeper_broker_queue_messages",
                              "Messages waiting in each broker queue.", labels=["queue"])
    online = GaugeMetricFamily(
        "beatkeeper_workers_online",
        f"Celery workers that answered a ping within {broker.BROKER_TIMEOUT_S:g} s.")
    workers = 0
    try:
        depths = broker.queue_depths(celery_app, broker.queue_names(celery_app),
                                    broker.BROKER_TIMEOUT_S)
    except broker.BROKER_ERRORS as exc:
        current_app.logger.warning("metrics: broker unavailable: %s", _reason(exc))
        up.add_metric([], 0)
    else:
        up.add_metric([], 1)
        for name, n in depths.items():
            depth.add_metric([name], n)
        try:
            workers = len(_ping_workers(celery_app))
        except broker.BROKER_ERRORS as exc:
            current_app.logger.warning("metrics: worker ping failed: %s", _reason(exc))
    online.add_metric([], workers)
    return [up, depth, online]


@bp.get("/metrics")
def metrics():
    """Prometheus text format. With METRICS_TOKEN set, `Authorization: Bearer <token>`."""
    if not _authorized():
        return Response("unauthorized\n", 401, {"WWW-Authenticate": 'Bearer realm="metrics"',
                                                "Content-Type": "text/plain"})
    celery_app = current_app.extensions["celery"]
    started = time.monotonic()
    families = _run_families() + _outbox_and_beat_families()
    db.session.rollback()  # no transaction stays open while the broker is asked
    families += _broker_families(celery_app)
    families.append(GaugeMetricFamily("beatkeeper_scrape_duration_seconds",
                                      "Seconds this scrape took to compute.",
                                      value=time.monotonic() - started))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(families))
    return Response(generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST,
                                                     "Cache-Control": "no-store"})


def init_app(app: Flask) -> None:
    from app import csrf

    app.register_blueprint(bp)
    csrf.exempt(bp)
