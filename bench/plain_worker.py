"""Plain Celery apps for the throughput baselines: `celery -A bench.plain_worker worker ...`.

No Flask, no FlaskTask, no job records: one task, `bench.plain_noop`, returning what
demo.noop returns. The settings are ours (app.config.celery_settings: the same broker, JSON
serializer, prefetch multiplier 1, task events, transport options), except the result side:

* BENCH_PLAIN_BACKEND unset: no result backend, task_ignore_result=True (the plain baseline);
* BENCH_PLAIN_BACKEND=db: Celery's own database result backend on our PostgreSQL
  (`db+postgresql://...`, tables celery_taskmeta / celery_tasksetmeta) with
  result_extended=True, so each result row also holds the name, args, kwargs, worker and
  queue (the peer: "records" the way Celery itself keeps them).

Reads REDIS_URL and DATABASE_URL from the environment, as the worker does. Importing it
elsewhere (bench.throughput takes PLAIN_TASK) builds an unused app that is not made current.
"""
from __future__ import annotations

import os
from typing import Any

from celery import Celery

from app.config import celery_settings

PLAIN_TASK = "bench.plain_noop"


def _settings() -> dict[str, Any]:
    settings = celery_settings(os.environ.get("REDIS_URL"))
    settings.pop("beat_scheduler", None)
    if os.environ.get("BENCH_PLAIN_BACKEND") == "db":
        settings.update(
            result_backend="db+" + os.environ["DATABASE_URL"],
            result_extended=True,
            task_ignore_result=False,
        )
    return settings


app = Celery("bench_plain", set_as_current=False)
app.config_from_object(_settings())


@app.task(name=PLAIN_TASK)
def plain_noop(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """demo.noop without a wrapper: return the arguments it was given."""
    return {"args": list(args), "kwargs": kwargs}
