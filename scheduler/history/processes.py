"""The processes the pages show: beats (leader and standbys) and worker processes (each pool
child too), alive or gone, from their heartbeats in PostgreSQL."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from models import db

#: A beat whose heartbeat is older than this is gone (a live beat ticks at least every 1 s).
BEAT_STALE_S = 10.0


# -- beats ----------------------------------------------------------------------------------

@dataclass
class Beat:
    node: str
    host: str
    pid: int
    role: str
    started_at: datetime
    last_tick_at: datetime
    age_s: float

    @property
    def alive(self) -> bool:
        return self.age_s <= BEAT_STALE_S


def beats() -> list[Beat]:
    """Every beat heartbeat, the leader first, then by last tick (newest first)."""
    rows = db.session.execute(text(
        "SELECT node, host, pid, role, started_at, last_tick_at, "
        "extract(epoch FROM now() - last_tick_at) AS age_s FROM beat_heartbeats "
        "ORDER BY role = 'leader' DESC, last_tick_at DESC")).all()
    return [Beat(r.node, r.host, r.pid, r.role, r.started_at, r.last_tick_at,
                 max(float(r.age_s), 0.0)) for r in rows]


def beat_leader(found: list[Beat]) -> Beat | None:
    """The leading beat, if its heartbeat is fresh."""
    return next((b for b in found if b.role == "leader" and b.alive), None)


# -- worker processes -----------------------------------------------------------------------

#: Processes gone longer than this are not listed.
PROCESSES_SHOWN_GONE_S = 3600.0


@dataclass
class Process:
    id: int
    host: str
    pid: int
    kind: str
    node: str | None
    pool: str | None
    parent_id: int | None
    started_at: datetime
    age_s: float
    stopped_at: datetime | None
    running: int
    #: Not seen for LOST_AFTER_S, or exited.
    gone: bool


def worker_processes(lost_after_s: float) -> list[Process]:
    """The worker processes alive, and those gone within PROCESSES_SHOWN_GONE_S, each with
    the runs it runs; main processes first, each followed by its pool children."""
    rows = db.session.execute(text("""
        SELECT p.id, p.host, p.pid, p.kind, p.node, p.pool, p.parent_id, p.started_at,
               greatest(extract(epoch FROM now() - p.last_seen_at), 0) AS age_s, p.stopped_at,
               (SELECT count(*) FROM job_runs r
                WHERE r.worker_process_id = p.id AND r.state = 'running') AS running,
               p.stopped_at IS NOT NULL
                   OR p.last_seen_at < now() - make_interval(secs => :lost_after) AS gone
        FROM worker_processes p
        WHERE p.last_seen_at >= now() - make_interval(secs => :shown)
        ORDER BY coalesce(p.parent_id, p.id) DESC, p.parent_id IS NOT NULL, p.id
    """), {"lost_after": lost_after_s, "shown": PROCESSES_SHOWN_GONE_S}).all()
    return [Process(r.id, r.host, r.pid, r.kind, r.node, r.pool, r.parent_id, r.started_at,
                    float(r.age_s), r.stopped_at, r.running, r.gone) for r in rows]


def leader_tick_age(found: list[Beat]) -> float | None:
    """Seconds since the newest heartbeat of a leading beat; None when no beat ever led."""
    ages = [b.age_s for b in found if b.role == "leader"]
    return min(ages) if ages else None


def beats_alive(found: list[Beat]) -> dict[str, int]:
    """Beats with a fresh heartbeat, by role (leader, standby)."""
    counts = {"leader": 0, "standby": 0}
    for beat in found:
        if beat.alive:
            counts[beat.role] = counts.get(beat.role, 0) + 1
    return counts
