"""The broker as Beatkeeper reads it: a Redis client, its errors, kombu's key names, queue
depths and the workers' own answers (Celery's inspect broadcast)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from celery import Celery
from sqlalchemy import text

from models import db, utcnow
from scheduler.enqueue import PUBLISH_ERRORS

#: Errors that mean "Redis or the workers did not answer".
BROKER_ERRORS = PUBLISH_ERRORS + (redis.RedisError,)
#: Seconds to wait for Redis and for the workers' answers (pages, /readyz, metrics).
BROKER_TIMEOUT_S = 1.0


class Keys:
    """Names of kombu's Redis keys for this broker (transport options honoured)."""

    def __init__(self, celery_app: Celery) -> None:
        from kombu.transport.redis import PRIORITY_STEPS, Channel

        options: dict[str, Any] = celery_app.conf.broker_transport_options or {}
        self.prefix = options.get("global_keyprefix", "")
        self.steps = options.get("priority_steps", PRIORITY_STEPS)
        self.sep = options.get("sep", Channel.sep)
        self.unacked = self.prefix + options.get("unacked_key", Channel.unacked_key)
        self.unacked_index = self.prefix + options.get("unacked_index_key",
                                                       Channel.unacked_index_key)
        self.default_queue = celery_app.conf.task_default_queue or "celery"

    def lists(self, queue: str) -> list[str]:
        """The lists of one queue, one per priority step (kombu's Channel._q_for_pri)."""
        return [f"{self.prefix}{queue}{self.sep}{step}" if step else f"{self.prefix}{queue}"
                for step in self.steps]


def redis_client(url: str, timeout_s: float = BROKER_TIMEOUT_S) -> redis.Redis:
    """A redis-py client for a broker URL: redis://, rediss:// or kombu's redis+socket://."""
    if url.startswith("redis+socket://"):
        parts = urlsplit(url)
        vhost = parse_qs(parts.query).get("virtual_host", ["0"])[0].strip("/") or "0"
        return redis.Redis(unix_socket_path=parts.path, db=int(vhost),
                           password=parts.password, socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s)
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def queue_names(celery_app: Celery, since: timedelta = timedelta(hours=24),
                now: datetime | None = None) -> list[str]:
    """The default queue, and every queue named by a schedule or by a recent run."""
    names = {celery_app.conf.task_default_queue or "celery"}
    names.update(q.name for q in (celery_app.conf.task_queues or ()))
    names.update(db.session.scalars(text(
        "SELECT DISTINCT queue FROM schedules WHERE queue IS NOT NULL "
        "UNION SELECT DISTINCT queue FROM job_runs "
        "WHERE created_at >= :since AND queue IS NOT NULL"),
        {"since": (now or utcnow()) - since}))
    return sorted(names)


def queue_depths(celery_app: Celery, names: list[str],
                 timeout_s: float = BROKER_TIMEOUT_S) -> dict[str, int]:
    """Messages waiting in each queue, in one round trip to Redis (raises redis errors).

    Kombu keeps a queue as one list per priority step (Keys.lists), so a depth is their sum,
    as in kombu's own `_size`.
    """
    keys = Keys(celery_app)
    client = redis_client(celery_app.conf.broker_url, timeout_s)
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                for key in keys.lists(name):
                    pipe.llen(key)
            sizes = pipe.execute()
    finally:
        client.close()
    steps = len(keys.steps)
    return {name: sum(sizes[i * steps:(i + 1) * steps]) for i, name in enumerate(names)}


@dataclass
class Worker:
    node: str
    pid: int | None = None
    concurrency: int | None = None
    uptime_s: float | None = None
    active: list[dict] = field(default_factory=list)
    reserved: list[dict] = field(default_factory=list)
    scheduled: list[dict] = field(default_factory=list)


def workers(celery_app: Celery, timeout_s: float = BROKER_TIMEOUT_S) -> list[Worker]:
    """The workers that answer within `timeout_s`, with what they run and hold.

    A broadcast waits its whole timeout unless it knows how many replies to expect, so only
    the first one (stats, which also tells who is online) waits; the others go to the nodes
    that answered and return as soon as all of them have. Raises on broker errors.
    """
    stats = celery_app.control.inspect(timeout=timeout_s).stats() or {}
    found = {node: Worker(node, info.get("pid"),
                          (info.get("pool") or {}).get("max-concurrency"), info.get("uptime"))
             for node, info in sorted(stats.items())}
    if not found:
        return []
    inspect = celery_app.control.inspect(destination=list(found), timeout=timeout_s,
                                         limit=len(found))
    for attribute in ("active", "reserved", "scheduled"):
        for node, tasks in (getattr(inspect, attribute)() or {}).items():
            if node in found:
                setattr(found[node], attribute, tasks or [])
    return list(found.values())
