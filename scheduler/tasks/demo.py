"""Demo tasks: the seed's long task with progress, a no-op, a failure and a big result."""
from __future__ import annotations

import random
import time
from typing import Any

from celery import shared_task
from flask import current_app

VERBS = ["Starting up", "Booting", "Repairing", "Loading", "Checking"]
ADJECTIVES = ["master", "radiant", "silent", "harmonic", "fast"]
NOUNS = ["solar array", "particle reshaper", "cosmic ray", "orbiter", "bit"]


def _status_text() -> str:
    return f"{random.choice(VERBS)} {random.choice(ADJECTIVES)} {random.choice(NOUNS)}..."


@shared_task(bind=True, name="demo.long_task")
def long_task(self, steps: int | None = None) -> dict[str, Any]:
    """10 to 50 steps of DEMO_STEP_SECONDS each, reporting progress with a whimsical status."""
    step_s = current_app.config["DEMO_STEP_SECONDS"]
    total = int(steps) if steps else random.randint(10, 50)
    message = ""
    for i in range(total):
        if not message or random.random() < 0.25:
            message = _status_text()
        self.update_progress(i, total, message)
        time.sleep(step_s)
    self.update_progress(total, total, "Task completed!")
    return {"current": 100, "total": 100, "status": "Task completed!", "result": 42}


@shared_task(name="demo.noop")
def noop(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments it was given."""
    return {"args": list(args), "kwargs": kwargs}


@shared_task(bind=True, name="demo.sleep", acks_late=True)
def sleep(self, seconds: float = 5.0, step_s: float = 0.1) -> dict[str, Any]:
    """Sleep, reporting progress. Safe to repeat, so acknowledged late: if its worker process
    dies (even by kill -9), the broker delivers it again and the run shows a new attempt."""
    steps = max(1, int(float(seconds) / float(step_s)))
    for i in range(steps):
        self.update_progress(i, steps)
        time.sleep(float(step_s))
    self.update_progress(steps, steps)
    return {"slept_s": float(seconds)}


class DemoFailure(RuntimeError):
    """Raised by demo.fail."""


@shared_task(bind=True, name="demo.fail", max_retries=None)
def fail(self, message: str = "demo failure", retries: int = 0, countdown: float = 0.1) -> None:
    """Raise DemoFailure; with `retries`, retry that many times first."""
    if self.request.retries < int(retries):
        raise self.retry(exc=DemoFailure(message), countdown=countdown, max_retries=int(retries))
    raise DemoFailure(message)


#: Largest result demo.big_result makes: anyone who may start a task must not be able to
#: make a worker allocate gigabytes.
BIG_RESULT_MAX_CHARS = 16 * 1024 * 1024


@shared_task(name="demo.big_result")
def big_result(size: int = 5 * 1024 * 1024) -> str:
    """Return a string of `size` characters (at most BIG_RESULT_MAX_CHARS), a result far over
    RESULT_MAX_BYTES."""
    return "x" * max(0, min(int(size), BIG_RESULT_MAX_CHARS))
