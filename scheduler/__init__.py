"""Celery integration: celery_init_app binds one Celery app to the Flask app."""
from __future__ import annotations

from celery import Celery
from celery.signals import (
    task_revoked, worker_init, worker_process_init, worker_process_shutdown, worker_shutdown,
)
from flask import Flask

from models.states import UNFINISHED_STATES
from scheduler.task import FlaskTask

#: Modules holding our tasks, imported by every process that builds the Celery app.
TASK_MODULES = ["scheduler.tasks.demo", "scheduler.tasks.mail", "scheduler.tasks.maintenance"]


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app from app.config["CELERY"] and store it in app.extensions."""
    _cooperate_with_gevent()
    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.conf.include = TASK_MODULES
    celery_app.flask_app = app
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    celery_app.loader.import_default_modules()
    _connect_worker_signals(celery_app)
    return celery_app


def _connect_worker_signals(celery_app: Celery) -> None:
    from models import db
    from scheduler import heartbeat, recorder, records

    app = celery_app.flask_app

    @worker_init.connect(weak=False)
    def register_worker(sender=None, **_: object) -> None:
        # The worker's main process, registered before its pool forks: each child then knows
        # its parent. With the solo, threads and gevent pools it also runs the tasks.
        pool = getattr(sender, "pool_cls", None)
        if not isinstance(pool, str):  # the class: named by its module, as `-P` names it
            pool = getattr(pool, "__module__", "").rsplit(".", 1)[-1] or None
            pool = {"thread": "threads"}.get(pool, pool)
        with app.app_context():
            heartbeat.start(db.engine, app.config, kind="main",
                            node=getattr(sender, "hostname", None), pool=pool)

    @worker_process_init.connect(weak=False)
    def dispose_engine_after_fork(**_: object) -> None:
        # A forked child must not share the parent's pooled connections (SQLAlchemy
        # "Using Connection Pools with Multiprocessing"); close=False leaves the parent's alone.
        with app.app_context():
            db.engine.dispose(close=False)
            heartbeat.start(db.engine, app.config, kind="child")

    @worker_process_shutdown.connect(weak=False)
    @worker_shutdown.connect(weak=False)
    def write_buffered_records(**_: object) -> None:
        # A pool child (or a solo/threads worker) exiting writes what it still holds, then
        # says it exited: its runs are no longer its.
        recorder.stop_current(timeout=app.config["RECORD_SHUTDOWN_WAIT_S"])
        heartbeat.stop()

    @task_revoked.connect(weak=False)
    def record_revoked(request=None, terminated=False, signum=None, expired=False, **_: object):
        if request is None or request.id is None:
            return
        reason = "expired" if expired else ("terminated" if terminated else "revoked")
        with app.app_context():
            # A terminated run was running; an expired or revoked one never started.
            records.revoke(request.id, reason, states=UNFINISHED_STATES)


def _cooperate_with_gevent() -> None:
    """Under `-P gevent`, Celery has monkey-patched the standard library before importing the
    app; psycopg2 is C and would block every greenlet during each query unless it waits
    through gevent (psycogreen, installed with the `gevent` extra)."""
    import sys

    if "gevent" not in sys.modules:
        return
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return
    try:
        from psycogreen.gevent import patch_psycopg
    except ImportError:  # the pool still works; queries block the hub while they run
        return
    patch_psycopg()
