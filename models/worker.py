"""Worker processes as they report themselves: the liveness of every run's process."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import DateTime

from models.base import db

TZ = DateTime(timezone=True)


class WorkerProcess(db.Model):
    """One Celery worker process: a worker's main process, or one of its pool children.

    Each keeps `last_seen_at` fresh (the database's clock, so hosts' clocks do not matter);
    one not seen for LOST_AFTER_S is gone, and so are the runs it held.
    """

    __tablename__ = "worker_processes"
    __table_args__ = (
        Index("ix_worker_processes_last_seen_at", "last_seen_at"),
        Index("ix_worker_processes_host_pid", "host", "pid"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: "main" (the worker's own process; it runs the tasks itself with the solo, threads and
    #: gevent pools) or "child" (a prefork pool process).
    kind: Mapped[str] = mapped_column(String(8))
    #: The Celery node name (worker@host) and its pool (prefork, solo, threads, gevent...).
    node: Mapped[str | None] = mapped_column(String(255))
    pool: Mapped[str | None] = mapped_column(String(32))
    #: The main process of a pool child.
    parent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("worker_processes.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    #: Set when the process exited cleanly.
    stopped_at: Mapped[datetime | None] = mapped_column(TZ)
    #: A main process's task ids received and not finished (prefetched, waiting for an ETA,
    #: running) as of its last heartbeat: who holds a message kombu keeps unacknowledged.
    holds: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
