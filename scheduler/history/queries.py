"""Reading job runs: the filtered list paged by key, counts, one run with its links and
progress. Shared by the admin pages, the JSON API and the CLI; every function needs an app
context.

The list pages by key, newest first (`id < before` / `id > after`), never by OFFSET: a page
deep in a history of millions costs what the first page costs (`python -m bench history`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from sqlalchemy import ColumnElement, Row, Select, Text, cast, func, or_, select
from sqlalchemy.orm import aliased, selectinload

from models import FINAL_STATES, Email, JobRun, RunState, Schedule, db

#: Runs per page, by default and at most.
PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
#: Rows an argument text search examines per page, newest first after the other filters.
#: A substring of the JSON text can use no index (pg_trgm, whose GIN index could, is not in
#: the embedded PostgreSQL), so each page is bounded (about 25 ms here for 50,000 runs) and
#: the next page goes on where it stopped.
SEARCH_WINDOW = 50_000
#: A search term at least this long also matches the task ids that start with it.
TASK_ID_PREFIX_MIN = 8
#: Counts are exact up to here, then "more than".
COUNT_EXACT_MAX = 10_000
#: Over this planner estimate a count says "about N" without counting.
COUNT_ESTIMATE_FROM = 100_000
#: A time bound of the filter also becomes an id bound, found among this many runs next to
#: it by created_at: exact unless ids and creation times disagree across more runs than
#: that (ids come from a sequence at insert, created_at from the inserting process just
#: before), and it saves the planner from filtering every newer run by created_at.
TIME_HINT_ROWS = 1_000


# --- filters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilters:
    """What the list shows; every field optional. `q` matches a task id (exactly, or as the
    prefix of one when at least TASK_ID_PREFIX_MIN long); when no task id matches, the text
    of the arguments (args and kwargs as JSON, case-insensitive)."""

    states: tuple[str, ...] = ()
    task: str | None = None
    trigger: str | None = None
    schedule_id: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    q: str | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> RunFilters:
        """From request arguments (`state` may repeat in a MultiDict); ValueError when bad."""
        getlist = getattr(args, "getlist", None)
        raw = getlist("state") if getlist else [args.get("state") or ""]
        states = tuple(dict.fromkeys(s.strip() for s in raw if s and s.strip()))
        for state in states:
            if state not in RunState._value2member_map_:
                raise ValueError(f"unknown state {state!r}")
        schedule = str(args.get("schedule") or "").strip()
        if schedule and not schedule.isdigit():
            raise ValueError("schedule must be a schedule id (a number)")
        return cls.make(states=states, task=args.get("task"), trigger=args.get("trigger"),
                        schedule_id=int(schedule) if schedule else None,
                        created_from=_time(args.get("from"), "from"),
                        created_to=_time(args.get("to"), "to"), q=args.get("q"))

    @classmethod
    def make(cls, *, states: Any = (), task: Any = None, trigger: Any = None,
             schedule_id: int | None = None, created_from: datetime | None = None,
             created_to: datetime | None = None, q: Any = None) -> RunFilters:
        """From values already checked (the API's schema, or from_args): texts stripped and
        cut to 255 characters, states once each."""
        return cls(states=tuple(dict.fromkeys(states or ())), task=_text(task),
                   trigger=_text(trigger), schedule_id=schedule_id, created_from=created_from,
                   created_to=created_to, q=_text(q))

    def to_args(self) -> dict[str, Any]:
        """The request arguments that give these filters back (links and hidden fields)."""
        values = {"state": list(self.states), "task": self.task, "trigger": self.trigger,
                  "schedule": self.schedule_id, "from": _iso(self.created_from),
                  "to": _iso(self.created_to), "q": self.q}
        return {k: v for k, v in values.items() if v not in (None, "", [])}

    @property
    def active(self) -> bool:
        return bool(self.to_args())


def _text(value: Any) -> str | None:
    return str(value or "").strip()[:255] or None


def _time(value: Any, name: str) -> datetime | None:
    """An ISO date or date-time; one without a zone is UTC, as the pages show times."""
    value = str(value or "").strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date and time like 2026-11-22T08:30") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M") if moment else None


def _like_escape(term: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", term)


@dataclass
class _Plan:
    """Filters turned into SQL: conditions, and the argument text to search, if any."""

    where: list[ColumnElement[bool]]
    term: str | None
    search: str | None  # "task_id" | "text" | None


def _plan(filters: RunFilters) -> _Plan:
    where: list[ColumnElement[bool]] = []
    if len(filters.states) == 1:
        where.append(JobRun.state == filters.states[0])
    elif filters.states:
        where.append(JobRun.state.in_(filters.states))
    if filters.task:
        where.append(JobRun.task_name == filters.task)
    if filters.trigger:
        where.append(JobRun.trigger == filters.trigger)
    if filters.schedule_id is not None:
        where.append(JobRun.schedule_id == filters.schedule_id)
    if filters.created_from is not None:
        since = JobRun.created_at >= filters.created_from
        where += [since, JobRun.id >= _id_hint(since, first=True)]
    if filters.created_to is not None:
        until = JobRun.created_at < filters.created_to
        where += [until, JobRun.id <= _id_hint(until, first=False)]
    if not filters.q:
        return _Plan(where, None, None)
    if len(filters.q) >= TASK_ID_PREFIX_MIN:
        by_task_id = JobRun.task_id.like(_like_escape(filters.q) + "%", escape="\\")
    else:
        by_task_id = JobRun.task_id == filters.q
    if db.session.scalar(select(JobRun.id).where(by_task_id).limit(1)) is not None:
        return _Plan(where + [by_task_id], None, "task_id")
    return _Plan(where, filters.q, "text")


def _id_hint(condition: ColumnElement[bool], first: bool) -> int:
    """The id bound of a time bound, so that the planner walks the id index from there
    instead of filtering every newer run by created_at (LIMIT's classic trap: 356 ms
    instead of 0.3 ms for "created before 80 days ago" among 1,000,000 runs)."""
    order = JobRun.created_at.asc() if first else JobRun.created_at.desc()
    near = select(JobRun.id).where(condition).order_by(order).limit(TIME_HINT_ROWS).subquery()
    bound = db.session.scalar(select((func.min if first else func.max)(near.c.id)))
    if bound is None:  # no run on that side of the bound: nothing matches
        return 2**62 if first else 0
    return bound


def _text_match(run: Any, term: str) -> ColumnElement[bool]:
    """Case-insensitive substring of the args or kwargs JSON text. strpos(lower(...)) takes
    the term literally (no LIKE wildcards) and costs half of ILIKE: 23 against 37 ms per
    SEARCH_WINDOW runs here."""
    needle = func.lower(term)
    return or_(func.strpos(func.lower(cast(run.args, Text)), needle) > 0,
               func.strpos(func.lower(cast(run.kwargs, Text)), needle) > 0)


def _list_columns(run: Any) -> list:
    """A row of the list: no result, traceback or whole arguments (they can be big)."""
    ended = func.coalesce(run.succeeded_at, run.failed_at, run.revoked_at, run.lost_at,
                          run.skipped_at)
    return [run.id, run.task_id, run.task_name, run.state, run.trigger, run.queue,
            run.attempts, run.created_at, run.started_at, run.eta, run.schedule_id,
            run.rerun_of_id, run.error_type, run.progress_current, run.progress_total,
            ended.label("ended_at"),
            func.left(cast(run.args, Text), 120).label("args_preview"),
            func.left(cast(run.kwargs, Text), 120).label("kwargs_preview")]


# --- the list ------------------------------------------------------------------------------


@dataclass
class Page:
    """One page of runs, newest first, and the keys of its neighbours."""

    runs: list[Row]
    #: Give as `after=` for the newer page and `before=` for the older one; None: none.
    newer: int | None
    older: int | None
    #: Set when an argument text search examined SEARCH_WINDOW runs without filling the
    #: page: the last id it examined. The next page goes on from there.
    searched_to: int | None = None
    #: How q was taken: "task_id", "text", or None without q.
    search: str | None = None


def list_runs(filters: RunFilters, *, before: int | None = None, after: int | None = None,
              limit: int = PAGE_SIZE) -> Page:
    """A page of the runs matching `filters`, newest first: the newest ones below `before`,
    or, paging back towards the newest, the oldest ones above `after`."""
    limit = max(1, min(int(limit), MAX_PAGE_SIZE))
    plan = _plan(filters)
    forward = after is not None and before is None
    key = []
    if forward:
        key.append(JobRun.id > after)
    elif before is not None:
        key.append(JobRun.id < before)
    order = JobRun.id.asc() if forward else JobRun.id.desc()

    searched_to = None
    if plan.term is None:
        rows = db.session.execute(select(*_list_columns(JobRun)).where(*plan.where, *key)
                                  .order_by(order).limit(limit + 1)).all()
    else:
        window = select(JobRun).where(*plan.where, *key).order_by(order) \
            .limit(SEARCH_WINDOW).subquery()
        run = aliased(JobRun, window)
        rows = db.session.execute(
            select(*_list_columns(run)).where(_text_match(run, plan.term))
            .order_by(run.id.asc() if forward else run.id.desc()).limit(limit + 1)).all()
        if len(rows) <= limit:
            searched_to = _window_edge(select(JobRun.id).where(*plan.where, *key)
                                       .order_by(order), forward)

    more = len(rows) > limit
    rows = rows[:limit]
    if forward:
        rows.reverse()
        newer = rows[0].id if more else searched_to
        older = rows[-1].id if rows else after + 1
    else:
        older = rows[-1].id if more else searched_to
        newer = None
        if before is not None:
            top = rows[0].id if rows else before - 1
            if plan.term is not None or _exists(select(JobRun.id).where(*plan.where,
                                                                      JobRun.id > top)):
                newer = top
    return Page(rows, newer, older, searched_to, plan.search)


def _window_edge(ids: Select, forward: bool) -> int | None:
    """The last id of a full search window (None when the window reached the end)."""
    window = ids.limit(SEARCH_WINDOW).subquery()
    seen, edge = db.session.execute(
        select(func.count(), (func.max if forward else func.min)(window.c.id))).one()
    return edge if seen >= SEARCH_WINDOW else None


def _exists(stmt: Select) -> bool:
    return db.session.scalar(stmt.limit(1)) is not None

def matching_ids(filters: RunFilters, limit: int) -> list[int]:
    """The ids of the newest `limit` runs matching `filters` (an argument text search looks
    only at the newest SEARCH_WINDOW runs of the other filters, as a page does)."""
    plan = _plan(filters)
    if plan.term is None:
        return list(db.session.scalars(select(JobRun.id).where(*plan.where)
                                       .order_by(JobRun.id.desc()).limit(limit)))
    window = select(JobRun).where(*plan.where).order_by(JobRun.id.desc()) \
        .limit(SEARCH_WINDOW).subquery()
    run = aliased(JobRun, window)
    return list(db.session.scalars(select(run.id).where(_text_match(run, plan.term))
                                   .order_by(run.id.desc()).limit(limit)))


@dataclass(frozen=True)
class Count:
    """How many runs match: exactly, or a bound, or the planner's estimate."""

    value: int
    #: "exact", "more than", "at least" or "about".
    kind: str = "exact"

    def __str__(self) -> str:
        return f"{self.value:,}" if self.kind == "exact" else f"{self.kind} {self.value:,}"


def count_runs(filters: RunFilters) -> Count:
    """Count the matches where that is cheap: exactly up to COUNT_EXACT_MAX, the planner's
    estimate for big sets, and an argument search only within its window."""
    plan = _plan(filters)
    if plan.term is not None:
        window = select(JobRun.args, JobRun.kwargs).where(*plan.where) \
            .order_by(JobRun.id.desc()).limit(SEARCH_WINDOW).subquery()
        seen, matched = db.session.execute(select(
            func.count(), func.count().filter(_text_match(window.c, plan.term)))).one()
        return Count(matched, "exact" if seen < SEARCH_WINDOW else "at least")
    stmt = select(JobRun.id).where(*plan.where)
    estimate = _estimate(stmt)
    if estimate > COUNT_ESTIMATE_FROM:
        return Count(_round2(estimate), "about")
    n = db.session.scalar(select(func.count()).select_from(
        stmt.limit(COUNT_EXACT_MAX + 1).subquery()))
    return Count(COUNT_EXACT_MAX, "more than") if n > COUNT_EXACT_MAX else Count(n)


def _estimate(stmt: Select) -> int:
    """The planner's row estimate for stmt (EXPLAIN, nothing runs)."""
    compiled = stmt.compile(dialect=db.engine.dialect,
                            compile_kwargs={"render_postcompile": True})
    plan = db.session.connection().exec_driver_sql(
        "EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar()
    return int(plan[0]["Plan"]["Plan Rows"])


def _round2(n: int) -> int:
    """n to two significant digits."""
    digits = len(str(abs(n)))
    return round(n, -(digits - 2)) if digits > 2 else n


# --- one run -------------------------------------------------------------------------------


def get_run(run_id: int) -> JobRun | None:
    """The run with its events (the timeline of every attempt)."""
    return db.session.scalar(select(JobRun).where(JobRun.id == run_id)
                             .options(selectinload(JobRun.events)))


@dataclass
class RunLinks:
    """What a run page links to."""

    schedule: Row | None  # id, name
    rerun_of: Row | None  # id, state, trigger
    reruns: list[Row]  # id, state, trigger, created_at
    emails: list[Row]  # id, subject, state


def run_links(run: JobRun) -> RunLinks:
    schedule = None
    if run.schedule_id is not None:
        schedule = db.session.execute(select(Schedule.id, Schedule.name)
                                      .where(Schedule.id == run.schedule_id)).first()
    rerun_of = None
    if run.rerun_of_id is not None:
        rerun_of = db.session.execute(select(JobRun.id, JobRun.state, JobRun.trigger)
                                      .where(JobRun.id == run.rerun_of_id)).first()
    reruns = db.session.execute(
        select(JobRun.id, JobRun.state, JobRun.trigger, JobRun.created_at)
        .where(JobRun.rerun_of_id == run.id).order_by(JobRun.id).limit(100)).all()
    emails = db.session.execute(select(Email.id, Email.subject, Email.state)
                                .where(Email.run_id == run.id).order_by(Email.id)).all()
    return RunLinks(schedule, rerun_of, list(reruns), list(emails))


def progress(run: JobRun, now: datetime | None = None) -> dict[str, Any]:
    """The live part of a run: state, progress and an estimate of the time left."""
    now = now or datetime.now(timezone.utc)
    state = RunState(run.state)
    current, total = run.progress_current or 0, run.progress_total or 0
    if state is RunState.SUCCEEDED:
        percent = 100
    else:
        percent = max(0, min(100, round(current * 100 / total))) if total > 0 else 0
    seconds_left = None
    if state is RunState.RUNNING and 0 < current < total and run.started_at \
            and run.progress_at and run.progress_at > run.started_at:
        per_step = (run.progress_at - run.started_at).total_seconds() / current
        since = (now - run.progress_at).total_seconds()
        seconds_left = max(0.0, round(per_step * (total - current) - since, 1))
    if state is RunState.FAILED:
        message = run.error_message or run.error_type or "failed"
    else:
        message = run.progress_message or run.skip_reason or state.value.capitalize()
    return {"id": run.id, "state": state.value, "final": state in FINAL_STATES,
            "current": current, "total": total, "percent": percent, "message": message,
            "seconds_left": seconds_left,
            "progress_at": run.progress_at.isoformat() if run.progress_at else None}
