"""Beat leadership: a PostgreSQL advisory lock held on a dedicated connection, and heartbeats.

The beat holding the lock fires; the others stand by and try the lock on every tick. When the
leader dies, even by kill -9, PostgreSQL ends its session and frees the lock, so a standby takes
over on its next tick.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

from models import db

logger = logging.getLogger(__name__)

#: The advisory lock key ("beatkeep" read as 64-bit ASCII).
LOCK_KEY = int.from_bytes(b"beatkeep", "big") & 0x7FFF_FFFF_FFFF_FFFF
#: Heartbeats older than this belong to beats that are gone.
STALE_HEARTBEAT_S = 24 * 3600


class Leadership:
    """Holds (or waits for) the leader lock on its own connection, outside the pool."""

    def __init__(self, url: str) -> None:
        # TCP keepalives so a leader cut off by the network loses the lock within seconds,
        # not after the kernel's two-hour default (libpq ignores them on Unix sockets).
        self._engine: Engine = create_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5,
                          "keepalives_interval": 2, "keepalives_count": 2},
        )
        self._conn: Connection | None = None
        self.is_leader = False

    def check(self) -> bool:
        """Confirm the lock is still held, or try to take it; return whether we lead."""
        try:
            if self._conn is None:
                self._conn = self._engine.connect()
            if self.is_leader:
                self._conn.execute(text("SELECT 1"))
            else:
                self.is_leader = bool(self._conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}).scalar())
                if self.is_leader:
                    logger.info("beat: took the leader lock")
        except Exception as exc:  # the connection is gone, and the lock with it
            if self.is_leader:
                logger.error("beat: lost the leader lock (%s)", type(exc).__name__)
            self.drop()
        return self.is_leader

    def drop(self) -> None:
        """Forget the connection (and with it the lock)."""
        self.is_leader = False
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def release(self) -> None:
        if self._conn is not None and self.is_leader:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            except Exception:
                pass
        self.drop()
        self._engine.dispose()


def heartbeat(node: str, host: str, pid: int, role: str, now: datetime) -> None:
    """Record that this beat is alive, and in which role."""
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO beat_heartbeats (node, host, pid, role, started_at, last_tick_at) "
            "VALUES (:node, :host, :pid, :role, :now, :now) "
            "ON CONFLICT (node) DO UPDATE SET role = :role, last_tick_at = :now"
        ), {"node": node, "host": host, "pid": pid, "role": role, "now": now})


def forget(node: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM beat_heartbeats WHERE node = :node"), {"node": node})


def prune_heartbeats() -> int:
    """Remove heartbeats of beats gone for a day; return how many."""
    with db.engine.begin() as conn:
        return conn.execute(text(
            "DELETE FROM beat_heartbeats "
            "WHERE last_tick_at < now() - make_interval(secs => :stale)"
        ), {"stale": STALE_HEARTBEAT_S}).rowcount
