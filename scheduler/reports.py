"""What a worker process reports about its runs, merged per run while it waits, and the
statements that write a batch of reports (scheduler.recorder is their one writer)."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from models.states import ERROR_REPORT_STATES, SETTLED_STATES, STATE_TIMESTAMP, RunState, names

#: Outcomes a worker reports, each with its own timestamp column.
OUTCOMES = (RunState.SUCCEEDED, RunState.FAILED, RunState.RETRYING, RunState.QUEUED)


@dataclass
class Report:
    """What one run has reported and is not written yet."""

    task_id: str
    #: Set while the `running` transition is not written.
    started_at: datetime | None = None
    host: str | None = None
    pid: int | None = None
    #: The worker_processes row of the process that runs it.
    process_id: int | None = None
    #: The outcome: state, time, and its columns.
    state: str | None = None
    at: datetime | None = None
    result: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    eta: datetime | None = None
    message: str | None = None
    #: The latest progress.
    progress_current: int | None = None
    progress_total: int | None = None
    progress_message: str | None = None
    progress_at: datetime | None = None
    #: Set when the row may not exist (the start read failed): what a new row needs.
    task_name: str | None = None
    args: str | None = None
    kwargs: str | None = None
    call_json: str | None = None
    queue: str | None = None
    written: threading.Event = field(default_factory=threading.Event)
    #: The bytes this entry adds to the Recorder's total while it is pending.
    counted: int = 0

    def absorb(self, newer: "Report") -> None:
        """Merge a later report about the same run (a flush failed in between)."""
        for f in fields(self):
            if f.name in ("task_id", "written", "counted"):
                continue
            value = getattr(newer, f.name)
            if value is not None:
                setattr(self, f.name, value)
        newer.written = self.written

    def size(self) -> int:
        """Roughly the bytes this report holds."""
        return 200 + sum(len(v) for v in (self.result, self.traceback, self.error_message,
                                           self.message, self.args, self.kwargs, self.progress_message,
                                           self.call_json)
                         if v)

    def plain(self) -> "Report":
        """This report without what the database may refuse (progress, result, long texts)."""
        copy = Report(self.task_id, started_at=self.started_at, host=self.host, pid=self.pid,
                      process_id=self.process_id,
                      state=self.state, at=self.at, error_type=_short(self.error_type),
                      error_message=_short(self.error_message), eta=self.eta,
                      message=_short(self.message), task_name=self.task_name,
                      args="null" if self.task_name else None,
                      kwargs="null" if self.task_name else None, call_json=self.call_json,
                      queue=self.queue)
        if self.result is not None:
            copy.result = json.dumps({"__unstorable__": True})
        return copy

    def row(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "task_id": self.task_id,
            "starting": self.started_at is not None,
            "started_at": iso(self.started_at),
            "host": self.host,
            "pid": self.pid,
            "process_id": self.process_id,
            "start_msg": f"started on {self.host} pid {self.pid}" if self.started_at else None,
            "state": self.state,
            "at": iso(self.at),
            "result": self.result,  # JSON text, cast by the statement
            "error_type": self.error_type,
            "error_message": self.error_message,
            "traceback": self.traceback,
            "eta": iso(self.eta),
            "message": self.message,
            "progress_at": iso(self.progress_at),
            "progress_current": self.progress_current,
            "progress_total": self.progress_total,
            "progress_message": self.progress_message,
        }


_COLUMNS = """task_id text, starting boolean, started_at timestamptz, host text, pid int,
    process_id bigint,
    start_msg text, state text, at timestamptz, result text, error_type text,
    error_message text, traceback text, eta timestamptz, message text, progress_at timestamptz,
    progress_current bigint, progress_total bigint, progress_message text"""


def _outcome_column(column: str, state: RunState) -> str:
    return f"{column} = CASE WHEN d.state = '{state.value}' THEN d.at ELSE r.{column} END"


_TIMESTAMPS = ",\n        ".join(
    _outcome_column(STATE_TIMESTAMP[s], s) for s in OUTCOMES
)

#: One statement for a batch: update every run, then add its events (running, outcome).
FLUSH_SQL = f"""
WITH d AS (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb)) AS d({_COLUMNS})
), u AS (
    UPDATE job_runs r SET
        state = COALESCE(d.state, CASE WHEN d.starting THEN 'running' ELSE r.state END),
        attempts = r.attempts + CASE WHEN d.starting THEN 1 ELSE 0 END,
        worker_host = COALESCE(d.host, r.worker_host),
        worker_pid = COALESCE(d.pid, r.worker_pid),
        worker_process_id = CASE WHEN d.starting THEN d.process_id
                                 ELSE r.worker_process_id END,
        started_at = COALESCE(d.started_at, r.started_at),
        {_TIMESTAMPS},
        result = CASE WHEN d.state = 'succeeded' THEN CAST(d.result AS jsonb)
                      ELSE r.result END,
        error_type = CASE WHEN d.state = ANY(:error_states) THEN d.error_type
                          ELSE r.error_type END,
        error_message = CASE WHEN d.state = ANY(:error_states) THEN d.error_message
                             ELSE r.error_message END,
        traceback = CASE WHEN d.state = ANY(:error_states) THEN d.traceback
                         ELSE r.traceback END,
        eta = CASE WHEN d.state = 'retrying' THEN d.eta ELSE r.eta END,
        progress_current = CASE WHEN d.progress_at IS NULL THEN r.progress_current ELSE d.progress_current END,
        progress_total = CASE WHEN d.progress_at IS NULL THEN r.progress_total ELSE d.progress_total END,
        progress_message = CASE WHEN d.progress_at IS NULL THEN r.progress_message ELSE d.progress_message END,
        progress_at = COALESCE(d.progress_at, r.progress_at),
        updated_at = clock_timestamp()
    FROM d
    WHERE r.task_id = d.task_id
      AND (NOT r.state = ANY(:settled)
           -- progress alone is always kept
           OR (d.state IS NULL AND NOT d.starting)
           -- cancelled after the start read found it not final (before its `running`
           -- was written): the cancel came too late; the outcome is what happened
           OR (r.state = 'revoked' AND d.starting))
    RETURNING r.id, r.task_id, r.attempts
)
INSERT INTO job_events (run_id, at, state, attempt, message)
SELECT u.id, e.at, e.state, u.attempts, e.message
FROM u
JOIN d USING (task_id)
CROSS JOIN LATERAL (VALUES (1, d.started_at, 'running', d.start_msg),
                           (2, d.at, d.state, d.message)) AS e(n, at, state, message)
WHERE e.state IS NOT NULL AND (e.n = 2 OR d.starting)
ORDER BY e.n
"""

#: Rows for runs reported while their row could not be read (a database outage), when no
#: publisher wrote one: plain-Celery publishers, whose row is otherwise made at start.
CREATE_SQL = """
WITH d AS (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb))
        AS d(task_id text, task_name text, args jsonb, kwargs jsonb, call_json text,
             queue text, at timestamptz)
), r AS (
    INSERT INTO job_runs (task_id, task_name, state, queue, args, kwargs, call_json,
                          queued_at, created_at, updated_at)
    SELECT task_id, task_name, 'queued', queue, args, kwargs, call_json, at, at, at FROM d
    ON CONFLICT DO NOTHING
    RETURNING id, queued_at
)
INSERT INTO job_events (run_id, at, state, attempt, message)
SELECT id, queued_at, 'queued', 0, 'recorded by the worker' FROM r
"""



def flush_parameters(batch: list[Report]) -> dict[str, Any]:
    """The bind parameters of FLUSH_SQL for a batch."""
    return {"batch": json.dumps([r.row() for r in batch]), "settled": names(SETTLED_STATES),
            "error_states": names(ERROR_REPORT_STATES)}


def _short(value: str | None) -> str | None:
    return value[:1000] if value else value
