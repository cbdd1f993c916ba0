"""Beat leadership: a PostgreSQL advisory lock held on a dedicated connection, and heartbeats.

The beat holding the lock fires; the others stand by and try the lock on every tick. When the
leader dies, even by kill -9, PostgreSQL ends its session and frees the lock, so a standby takes
over on its next tick.

When the leader's host vanishes instead (power or network gone: no FIN, no RST), nothing tells
PostgreSQL, and with the kernel's defaults it keeps the session, and the lock, for about two
hours. So every beat session asks the server for its own dead-peer detection (SERVER_TCP): the
server drops a silent beat's sessions about 11 s after their last packet, which frees the lock
and aborts whatever transaction the lost beat had open (rows it held FOR UPDATE, which the next
leader would otherwise skip). A standby leads on its next tick after that, within about 12 s.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

from models import db

logger = logging.getLogger(__name__)

#: The advisory lock key ("beatkeep" read as 64-bit ASCII).
LOCK_KEY = int.from_bytes(b"beatkeep", "big") & 0x7FFF_FFFF_FFFF_FFFF
#: Heartbeats older than this belong to beats that are gone.
STALE_HEARTBEAT_S = 24 * 3600
#: Server-side TCP settings of every beat session (ignored on Unix sockets, where a peer
#: cannot vanish): keepalive probes after 5 s of silence, every 2 s, and tcp_user_timeout,
#: which bounds both the probes and data left unacknowledged, so a session whose peer went
#: silent is dropped about 11 s after its last packet (the probe due at 5 + 3 x 2 s is the
#: first one past the 10 s). PostgreSQL 12 or later.
SERVER_TCP = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 2,
              "tcp_keepalives_count": 3, "tcp_user_timeout": 10_000}
#: A leading tick fires only if the lock was confirmed this recently: a tick held up by a dead
#: link must ask again rather than fire on an answer from before the cut.
CONFIRMED_WITHIN_S = 1.0


def bound_dead_peers(engine: Engine) -> None:
    """Give every new session of `engine` the server-side settings of SERVER_TCP."""
    event.listen(engine, "connect", _set_server_tcp)


def _set_server_tcp(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("; ".join(f"SET {name} = {value}" for name, value in SERVER_TCP.items()))
    finally:
        cursor.close()
    dbapi_conn.commit()  # a SET inside a transaction would go with the pool's rollback


class Leadership:
    """Holds (or waits for) the leader lock on its own connection, outside the pool."""

    def __init__(self, url: str) -> None:
        # Client-side keepalives and a user timeout, so that a leader cut off by the network
        # sees its lock connection fail within seconds instead of waiting on it for the
        # kernel's minutes of retransmissions (libpq ignores them on Unix sockets). The server
        # side, which is what frees the lock, is bound_dead_peers'.
        self._engine: Engine = create_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5,
                          "keepalives_interval": 2, "keepalives_count": 2,
                          "tcp_user_timeout": 10_000},
        )
        bound_dead_peers(self._engine)
        self._conn: Connection | None = None
        self.is_leader = False
        self._confirmed_at = 0.0

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
        if self.is_leader:
            self._confirmed_at = time.monotonic()
        return self.is_leader

    def confirmed(self) -> bool:
        """Whether we still lead, asking PostgreSQL again unless check() said so within
        CONFIRMED_WITHIN_S. The lock's own session answering proves the lock is held: once
        the server has dropped that session, the client gets an error (a reset), never a
        stale yes, so a leader whose link comes back learns it lost the lock here."""
        if not self.is_leader:
            return False
        if time.monotonic() - self._confirmed_at <= CONFIRMED_WITHIN_S:
            return True
        return self.check()

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
