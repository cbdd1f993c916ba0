"""Demo tasks: the seed's long task with progress, a no-op and a failure."""
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


class DemoFailure(RuntimeError):
    """Raised by demo.fail."""


@shared_task(bind=True, name="demo.fail", max_retries=None)
def fail(self, message: str = "demo failure", retries: int = 0, countdown: float = 0.1) -> None:
    """Raise DemoFailure; with `retries`, retry that many times first."""
    if self.request.retries < int(retries):
        raise self.retry(exc=DemoFailure(message), countdown=countdown, max_retries=int(retries))
    raise DemoFailure(message)
