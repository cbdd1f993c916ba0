"""SQLAlchemy models and the one shared `db` object."""
from models.base import db, utcnow
from models.email import Email, FailureAlert
from models.job import JobEvent, JobRun
from models.rollup import JobRunDaily
from models.schedule import BeatHeartbeat, Schedule
from models.states import FINAL_STATES, RunState
from models.token import ApiToken
from models.user import ROLES, User
from models.worker import WorkerProcess

__all__ = ["db", "utcnow", "Email", "FailureAlert", "JobRun", "JobEvent", "JobRunDaily", "Schedule", "BeatHeartbeat", "RunState", "FINAL_STATES",
           "User", "ROLES", "ApiToken", "WorkerProcess"]
