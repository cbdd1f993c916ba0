"""Recovery of lost messages: a `queued` run (or a `retrying` one past its due time) whose
message is provably nowhere is published again with its task_id.

A message is lost when Redis restarts without saving or is flushed, or when a worker's main
process dies (kill -9) holding prefetched messages: kombu keeps those in its `unacked` hash and
restores them only after `visibility_timeout` (one hour), so the run would wait that long, or
for ever after a flush. The run row in PostgreSQL is the truth; this module finds the runs whose
message is gone and hands them to the broker again.

A message is proven lost when, in two looks `confirm_s` apart, it is in none of the queue lists
and no live worker may hold it: it is at most in the unacked hash, delivered to a consumer that
is gone. Who holds an unacked entry is read from the worker processes' heartbeats
(scheduler.heartbeat), not from a broadcast, which a busy worker cannot answer: each live
worker's main process lists what it holds; an entry of a run whose worker's main process is gone
was that process's when it was delivered before its last heartbeat. A worker answering the
broadcast that it holds a message proves it held; no answer proves nothing. Each look reads
where a message goes in the order it goes (queue list, unacked hash, workers), so a message
moving on between two reads is seen at the later place; one caught between places (popped, not
yet registered) is seen by the second look. An unacked entry of a dead consumer is deleted
before the new publish, and only the pass whose HDEL removed it publishes, so kombu never
restores it later as a duplicate. Nothing is published when Redis fails. A run is republished in
a transaction that holds its row and checks it did not change since it was read (a worker
starting it, or another pass republishing it, changes it). The looks are at least
RECORD_RETRY_MAX_S apart: a worker process buffers its run records while PostgreSQL is down
(scheduler.recorder), so a run that ran during a database outage may still read `queued` for
that long after it ends.

Redis data loss is noticed by EPOCH_KEY, set when missing to the time it was set: runs queued
before that time cannot have a message in this Redis unless it was published again, so they are
checked after REQUEUE_AFTER_LOSS_S instead of REQUEUE_AFTER_S. The very first check sees the
key missing too, which only costs one early look.

Limits: a queue longer than MAX_SCAN_MESSAGES is not searched, and its runs are left alone. A
worker of an earlier release (no list of what it holds) that started before a delivery counts
as that message's possible holder.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import redis
from celery import Celery
from flask import current_app
from sqlalchemy import text

from models import db
from scheduler import broker, records
from scheduler.beat.dispatch import publish_run
from scheduler.enqueue import PUBLISH_ERRORS

logger = logging.getLogger(__name__)

#: Redis key whose absence means Redis lost its data (or was never checked).
EPOCH_KEY = "beatkeeper.broker-epoch"
#: Runs looked at in one pass (oldest first).
BATCH = 1000
#: Messages read from one queue list at most; a run of a longer queue cannot be proven lost.
MAX_SCAN_MESSAGES = 20_000
#: Messages read per LRANGE / HSCAN call.
CHUNK = 1000
#: Seconds added to the recorder's longest write delay between the two looks.
CONFIRM_MARGIN_S = 1.0
#: Seconds to wait for the workers' answers to the broadcast (query_task).
INSPECT_TIMEOUT_S = 1.0
#: Advisory lock so that one pass runs at a time ("bk-requ!" as 64-bit ASCII).
LOCK_KEY = int.from_bytes(b"bk-requ!", "big")


@dataclass
class Candidate:
    id: int
    task_id: str
    task_name: str
    args: Any
    kwargs: Any
    queue: str | None
    state: str
    updated_at: datetime
    #: Set when the main process of the worker that last ran it is gone: its last heartbeat.
    #: Unacked entries delivered before then were that process's, and nobody else's.
    holder_gone_at: datetime | None = None


def requeue_lost_messages(celery_app: Celery, older_than_s: float,
                          after_loss_s: float | None = None,
                          confirm_s: float | None = None) -> list[int]:
    """Publish again the runs queued for longer than older_than_s (after_loss_s for runs
    queued before Redis lost its data) whose message is provably gone; return their ids.

    confirm_s is the time between the two looks (by default the longest time a worker holds
    a run record back, RECORD_RETRY_MAX_S + RECORD_FLUSH_S, plus CONFIRM_MARGIN_S). Does
    nothing when the broker or the workers' broadcast fails, or when another pass runs.
    """
    if after_loss_s is None:
        after_loss_s = older_than_s
    if confirm_s is None:
        config = current_app.config
        confirm_s = config["RECORD_RETRY_MAX_S"] + config["RECORD_FLUSH_S"] + CONFIRM_MARGIN_S
    with _exclusive() as mine:
        if not mine:
            return []
        client = broker.redis_client(celery_app.conf.broker_url)
        try:
            return _pass(celery_app, client, older_than_s, after_loss_s, confirm_s)
        except broker.BROKER_ERRORS as exc:
            logger.warning("recovery: the broker does not answer (%s); nothing republished", exc)
            return []
        finally:
            client.close()


def _pass(celery_app: Celery, client: redis.Redis, older_than_s: float, after_loss_s: float,
          confirm_s: float) -> list[int]:
    keys = broker.Keys(celery_app)
    now = datetime.now(timezone.utc)
    epoch = _epoch(client, keys.prefix + EPOCH_KEY, now)
    candidates = _candidates(now, older_than_s, after_loss_s, epoch)
    if not candidates:
        return []
    queues = sorted(set(broker.queue_names(celery_app))
                    | {c.queue or keys.default_queue for c in candidates})
    db.session.rollback()  # no transaction of ours stays open while we wait
    first = _look(celery_app, client, keys, candidates, queues)
    candidates = [c for c in candidates if c.task_id in first]
    if not candidates:
        return []
    time.sleep(confirm_s)
    second = _look(celery_app, client, keys, candidates, queues)
    lost = [c for c in candidates if c.task_id in second]
    tags = {c.task_id: first[c.task_id] | second[c.task_id] for c in lost}
    return _republish(celery_app, client, keys, lost, tags)


def _epoch(client: redis.Redis, key: str, now: datetime) -> datetime:
    """When this Redis was first seen with its current data (the key is set when missing)."""
    if client.set(key, repr(now.timestamp()), nx=True):
        logger.warning("recovery: %s was missing (Redis lost its data, or this is the first "
                       "check); runs queued before now are checked early", key)
    value = client.get(key)
    return datetime.fromtimestamp(float(value), timezone.utc) if value else now


def _candidates(now: datetime, older_than_s: float, after_loss_s: float,
                epoch: datetime) -> list[Candidate]:
    """Queued runs waiting longer than they should, retrying runs past their due time, and
    runs the sweep queued again after their worker's main process died (at once)."""
    cutoff = now - timedelta(seconds=older_than_s)
    loss_cutoff = min(epoch, now - timedelta(seconds=after_loss_s))
    late = now - timedelta(seconds=after_loss_s)
    rows = db.session.execute(text("""
        SELECT r.id, r.task_id, r.task_name, r.args, r.kwargs, r.queue, r.state, r.updated_at,
               CASE WHEN m.stopped_at IS NOT NULL
                         OR m.last_seen_at < now() - make_interval(secs => :lost_after)
                    THEN m.last_seen_at END AS holder_gone_at
        FROM job_runs r
        LEFT JOIN worker_processes p ON p.id = r.worker_process_id
        LEFT JOIN worker_processes m ON m.id = coalesce(p.parent_id, p.id)
        WHERE (r.state = 'queued'
               AND (coalesce(r.queued_at, r.created_at) < greatest(:cutoff, :loss)
                    OR (r.worker_process_id IS NOT NULL
                        AND (m.stopped_at IS NOT NULL
                             OR m.last_seen_at < now() - make_interval(secs => :lost_after)))))
           OR (r.state = 'retrying' AND (coalesce(r.eta, r.retrying_at) < :cutoff
               OR (r.retrying_at < :epoch AND coalesce(r.eta, r.retrying_at) < :late)))
        ORDER BY r.id LIMIT :batch
    """), {"cutoff": cutoff, "loss": loss_cutoff, "epoch": epoch, "late": late,
           "batch": BATCH, "lost_after": current_app.config["LOST_AFTER_S"]}).all()
    db.session.rollback()
    return [Candidate(*row) for row in rows]


def _look(celery_app: Celery, client: redis.Redis, keys: broker.Keys,
          candidates: list[Candidate],
          queues: list[str]) -> dict[str, set[str]]:
    """The candidates whose message is in no queue list and on no live worker, each with the
    delivery tags of its entries in the unacked hash (held by no live consumer)."""
    wanted = {c.task_id for c in candidates}
    # 1. The queue lists (where a message waits first).
    seen: set[str] = set()
    unsearched: set[str] = set()
    for queue in queues:
        for key in keys.lists(queue):
            found = _search_list(client, key, wanted)
            if found is None:
                unsearched.add(queue)
            else:
                seen |= found
    # 2. The unacked hash (a message popped by a consumer, until it is acked), and whether a
    # live consumer may hold each entry.
    unacked = _search_unacked(client, keys.unacked, wanted)
    held = _held_by_live_workers(client, keys, candidates, unacked)
    # 3. What the workers that answer a broadcast say they hold (reserved, running, waiting
    # for an ETA): an answer proves a message held; no answer proves nothing.
    held |= _held_by_workers(celery_app, wanted)
    return {c.task_id: unacked.get(c.task_id, set()) for c in candidates
            if c.task_id not in seen and c.task_id not in held
            and (c.queue or keys.default_queue) not in unsearched}


def _held_by_live_workers(client: redis.Redis, keys: broker.Keys, candidates: list[Candidate],
                          unacked: dict[str, set[str]]) -> set[str]:
    """The candidates with an unacked entry that a live worker may hold.

    Kombu's unacked index keeps when each entry was delivered, not to whom. A live worker's
    main process lists what it holds in its heartbeat (scheduler.heartbeat): an entry is held
    when one lists it, or when it is too recent for the lists to tell, or when a live worker
    that lists nothing (an older release) started before its delivery. An entry of a run whose
    worker's main process is gone, delivered before that process's last heartbeat, was that
    process's.
    """
    tags = sorted({tag for found in unacked.values() for tag in found})
    if not tags:
        return set()
    with client.pipeline(transaction=False) as pipe:  # ZSCOREs, not ZMSCORE (Redis 6.2+)
        for tag in tags:
            pipe.zscore(keys.unacked_index, tag)
        delivered = dict(zip(tags, pipe.execute()))
    config = current_app.config
    live = db.session.execute(text("""
        SELECT extract(epoch FROM started_at) AS started, holds,
               extract(epoch FROM now()) AS now FROM worker_processes
        WHERE kind = 'main' AND stopped_at IS NULL
          AND last_seen_at >= now() - make_interval(secs => :lost_after)
    """), {"lost_after": config["LOST_AFTER_S"]}).all()
    db.session.rollback()
    listed = {task_id for worker in live for task_id in (worker.holds or ())}
    unlisting = [float(w.started) for w in live if w.holds is None]
    # A delivery this recent may not be in its holder's list yet.
    recent = (float(live[0].now) if live else time.time()) - 2 * config["HEARTBEAT_S"] - 1
    held = set()
    for run in candidates:
        if run.task_id in listed:
            held.add(run.task_id)
            continue
        for tag in unacked.get(run.task_id, ()):
            at = delivered.get(tag)
            if at is None:  # acked or restored meanwhile: the next look sees where it went
                held.add(run.task_id)
            elif run.holder_gone_at is not None and at <= run.holder_gone_at.timestamp():
                continue  # delivered to the worker that is gone, while it was there
            elif at > recent or any(started <= at for started in unlisting):
                held.add(run.task_id)
    return held


class _NoAnswer(redis.RedisError):
    """A worker answered one question of the look but not the next (a broker error: the
    pass stops and publishes nothing)."""


def _held_by_workers(celery_app: Celery, wanted: set[str]) -> set[str]:
    """The wanted ids that a worker answering within INSPECT_TIMEOUT_S holds.

    query_task finds reserved, running and ETA requests by id; but a retry has its run's
    task_id, and when the retry message arrives before the first attempt ends, the end
    removes the id from the worker's index, so the ETA request is only found in the
    `scheduled` list. That list is asked of the nodes that answered, which return at once.
    """
    replies = celery_app.control.inspect(timeout=INSPECT_TIMEOUT_S).query_task(*sorted(wanted))
    replies = replies or {}
    held = {task_id for answer in replies.values() for task_id in (answer or {})}
    if not replies:
        return held
    scheduled = celery_app.control.inspect(destination=list(replies), timeout=INSPECT_TIMEOUT_S,
                                           limit=len(replies)).scheduled() or {}
    if set(scheduled) != set(replies):
        raise _NoAnswer(f"no answer from {', '.join(sorted(set(replies) - set(scheduled)))}")
    held |= {(entry.get("request") or {}).get("id") for entries in scheduled.values()
             for entry in entries or ()} & wanted
    return held


def _task_id(raw: bytes) -> str | None:
    try:
        return json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None


def _found_in(raw: bytes, wanted: set[str]) -> set[str]:
    """The wanted ids in one raw message (by header, else by text for odd formats)."""
    task_id = _task_id(raw)
    if task_id is not None:
        return {task_id} & wanted
    text_ = raw.decode(errors="replace")
    return {w for w in wanted if w in text_}


def _search_list(client: redis.Redis, key: str, wanted: set[str]) -> set[str] | None:
    """The wanted ids in a queue list, or None when it is too long to search.

    Read from the head in chunks: producers push at the head (LPUSH) and consumers pop at the
    tail, so a message that stays in the list is never skipped, only read twice at worst.
    """
    length = client.llen(key)
    if length > MAX_SCAN_MESSAGES:
        logger.warning("recovery: %s holds %d messages; not searched", key, length)
        return None
    found: set[str] = set()
    start = 0
    # To the end of the list, however it grew meanwhile: a message only moves towards the
    # tail, so reading on until a short chunk cannot step over one that is still there.
    while True:
        chunk = client.lrange(key, start, start + CHUNK - 1)
        for raw in chunk:
            found |= _found_in(raw, wanted)
        if len(chunk) < CHUNK:
            return found
        start += CHUNK
        if start > 2 * MAX_SCAN_MESSAGES:
            logger.warning("recovery: %s keeps growing; not searched", key)
            return None


def _search_unacked(client: redis.Redis, key: str, wanted: set[str]) -> dict[str, set[str]]:
    """{task_id: delivery tags} of the wanted ids in kombu's unacked hash."""
    if client.hlen(key) > MAX_SCAN_MESSAGES:
        raise redis.RedisError(f"{key} holds more than {MAX_SCAN_MESSAGES} entries")
    found: dict[str, set[str]] = {}
    for tag, value in client.hscan_iter(key, count=CHUNK):
        try:
            payload = json.loads(value)[0]
            ids = {payload["headers"]["id"]} & wanted
        except (ValueError, KeyError, TypeError, IndexError):
            ids = _found_in(value, wanted)
        for task_id in ids:
            found.setdefault(task_id, set()).add(tag.decode() if isinstance(tag, bytes) else tag)
    return found


def _republish(celery_app: Celery, client: redis.Redis, keys: broker.Keys,
               lost: list[Candidate],
               tags: dict[str, set[str]]) -> list[int]:
    done = []
    with celery_app.producer_or_acquire() as producer:
        for run in lost:
            with db.engine.begin() as conn:
                row = conn.execute(text(
                    "SELECT id, task_id, task_name, args, kwargs, call_json, queue, attempts "
                    "FROM job_runs "
                    "WHERE id = :id AND state = :state AND updated_at = :updated_at "
                    "FOR UPDATE SKIP LOCKED"
                ), {"id": run.id, "state": run.state, "updated_at": run.updated_at}).first()
                if row is None:  # started, cancelled or republished meanwhile
                    continue
                held = tags.get(run.task_id)
                if held and not _forget_unacked(client, keys, held):
                    continue  # kombu restored it or a consumer acked it meanwhile
                where = ("held only by a worker that is gone" if held
                         else "in no queue and on no worker")
                try:
                    publish_run(celery_app, row, producer,
                                retries=row.attempts if run.state == "retrying" else None)
                except PUBLISH_ERRORS as exc:
                    logger.warning("recovery: broker unavailable (%s); will retry", exc)
                    return done
                except Exception as exc:  # noqa: BLE001 - its call not kept, or refused
                    records.unpublishable(row.id, f"message lost ({where}) and it cannot be "
                                          f"published again: {type(exc).__name__}: {exc}",
                                          conn=conn)
                    done.append(row.id)
                    continue
                records.requeued(row.id, f"message lost ({where}), republished", conn=conn)
            done.append(run.id)
            logger.warning("recovery: run %s (%s): message lost (%s), republished",
                           run.id, run.task_id, where)
    return done


def _forget_unacked(client: redis.Redis, keys: broker.Keys, tags: set[str]) -> bool:
    """Delete these unacked entries; True when this call deleted every one of them."""
    with client.pipeline(transaction=True) as pipe:
        for tag in sorted(tags):
            pipe.hdel(keys.unacked, tag)
        pipe.zrem(keys.unacked_index, *sorted(tags))
        removed = pipe.execute()[:-1]
    return all(removed)


@contextmanager
def _exclusive() -> Iterator[bool]:
    """Hold the recovery lock for the pass if no other process holds it."""
    with db.engine.connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}).scalar()
        conn.commit()
        try:
            yield bool(got)
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                conn.commit()
