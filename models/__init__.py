"""SQLAlchemy models and the one shared `db` object."""
from models.base import db
from models.job import JobEvent, JobRun
from models.states import FINAL_STATES, RunState

__all__ = ["db", "JobRun", "JobEvent", "RunState", "FINAL_STATES"]
