"""The one closed set of run states, and the groups of them the code speaks of.

SQL takes a group as a bind parameter (`state = ANY(:states)` with `names(GROUP)`), never
spliced into the statement's text."""
import enum
from typing import Iterable


class RunState(str, enum.Enum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVOKED = "revoked"
    LOST = "lost"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


#: States a run never leaves.
FINAL_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.REVOKED, RunState.LOST, RunState.SKIPPED}
)

#: States of work not finished yet, in the order of a run's life.
UNFINISHED_STATES = (RunState.SCHEDULED, RunState.QUEUED, RunState.RUNNING, RunState.RETRYING)

#: Final states that count as failures: the numerator of the failure rate.
FAILURE_STATES = frozenset({RunState.FAILED, RunState.LOST})

#: States a worker reports with an error (its type, message and traceback).
ERROR_REPORT_STATES = (RunState.FAILED, RunState.RETRYING)

#: Final states a worker's report does not overwrite: all but `lost`, which is the sweep's
#: inference (when the worker reports after all, its word wins); a run in one of them is not
#: run again when its message comes (a cancel, a duplicate delivery).
SETTLED_STATES = FINAL_STATES - {RunState.LOST}

#: The column of job_runs that records when a run entered each state.
STATE_TIMESTAMP = {
    RunState.SCHEDULED: "scheduled_at",
    RunState.QUEUED: "queued_at",
    RunState.RUNNING: "started_at",
    RunState.RETRYING: "retrying_at",
    RunState.SUCCEEDED: "succeeded_at",
    RunState.FAILED: "failed_at",
    RunState.REVOKED: "revoked_at",
    RunState.LOST: "lost_at",
    RunState.SKIPPED: "skipped_at",
}


def names(states: Iterable[RunState]) -> list[str]:
    """The values of `states`, in RunState's order: a bind parameter for `= ANY(...)`."""
    wanted = set(states)
    return [s.value for s in RunState if s in wanted]
