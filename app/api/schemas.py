"""Marshmallow schemas of the API: what it takes (validated) and what it answers (documented
in the OpenAPI document)."""
from __future__ import annotations

import math
from typing import Any

import marshmallow as ma
from marshmallow import ValidationError, fields, validate

from models import RunState
from models.email import EMAIL_STATES
from models.schedule import MISFIRE_POLICIES, OVERLAP_POLICIES

#: Largest id of a BIGINT key (runs, e-mails) and of an INTEGER one (schedules).
BIGINT_MAX, INT_MAX = 2**63 - 1, 2**31 - 1
#: Longest countdown: ten years.
COUNTDOWN_MAX_S = 10 * 366 * 86400
#: Nesting depth of JSON arguments.
JSON_MAX_DEPTH = 32


def _storable_text(value: str) -> None:
    """PostgreSQL text takes no NUL, and UTF-8 no lone surrogate."""
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise ValidationError("must be valid Unicode text")


class Text(fields.String):
    """A string PostgreSQL can store."""

    def __init__(self, *, max_length: int | None = None, **kwargs: Any) -> None:
        validators = list(kwargs.pop("validate", None) or [])
        validators.append(_storable_text)
        if max_length is not None:
            validators.append(validate.Length(max=max_length))
        super().__init__(validate=validators, **kwargs)


def storable_json(value: Any, depth: int = 0) -> None:
    """JSON that JSONB stores and Celery's JSON serializer sends unchanged."""
    if depth > JSON_MAX_DEPTH:
        raise ValidationError(f"nested more than {JSON_MAX_DEPTH} levels")
    if isinstance(value, str):
        _storable_text(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("numbers must be finite")
    elif isinstance(value, list):
        for item in value:
            storable_json(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable_text(key)
            storable_json(item, depth + 1)
    elif not (value is None or isinstance(value, (bool, int))):
        raise ValidationError("must be JSON")


class JsonList(fields.List):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.Raw(), validate=storable_json, **kwargs)


class JsonDict(fields.Dict):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(keys=fields.String(), values=fields.Raw(), validate=storable_json,
                         **kwargs)


def _id(maximum: int = BIGINT_MAX, **kwargs: Any) -> fields.Integer:
    return fields.Integer(validate=validate.Range(min=0, max=maximum), **kwargs)


def attributes(obj: Any, schema: type[ma.Schema]) -> dict[str, Any]:
    """The attributes of obj that `schema` shows (smorest dumps the dict)."""
    return {name: getattr(obj, name) for name in schema._declared_fields if hasattr(obj, name)}


class ErrorSchema(ma.Schema):
    code = fields.String(required=True, metadata={
        "description": "Stable error code: unauthorized, forbidden, not_found, bad_json, "
                       "validation_error, unknown_task, wrong_state, conflict, "
                       "broker_unavailable, ..."})
    message = fields.String(required=True, metadata={"description": "For people."})
    errors = fields.Dict(metadata={"description": "Validation errors by location and field"})


class MessageSchema(ma.Schema):
    message = fields.String(required=True)
    run_id = fields.Integer(allow_none=True)


# --- runs ----------------------------------------------------------------------------------

STATES = [s.value for s in RunState]


class RunListArgs(ma.Schema):
    """The runs page's filters and key paging (scheduler.runs.RunFilters)."""

    state = fields.List(fields.String(validate=validate.OneOf(STATES)),
                        metadata={"description": "Any of these states (repeat the parameter)"})
    task = Text(max_length=255)
    trigger = Text(max_length=255)
    schedule = _id(INT_MAX, metadata={"description": "Schedule id"})
    from_ = fields.DateTime(data_key="from", metadata={"description": "Created at or after"})
    to = fields.DateTime(metadata={"description": "Created before"})
    q = Text(max_length=255, metadata={
        "description": "A task id (or its prefix, 8+ characters), else text in the arguments"})
    before = _id(metadata={"description": "The page of runs older than this id "
                                          "(the `older` of a page)"})
    after = _id(metadata={"description": "The page of runs newer than this id "
                                         "(the `newer` of a page)"})
    limit = fields.Integer(validate=validate.Range(min=1, max=200))


class _RunFieldsSchema(ma.Schema):
    """The fields a run has in the list and on its own."""

    id = fields.Integer(required=True)
    task_id = fields.String(required=True)
    task_name = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    trigger = fields.String(required=True)
    queue = fields.String(allow_none=True)
    attempts = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    started_at = fields.DateTime(allow_none=True)
    eta = fields.DateTime(allow_none=True)
    schedule_id = fields.Integer(allow_none=True)
    rerun_of_id = fields.Integer(allow_none=True)
    error_type = fields.String(allow_none=True)


class RunRowSchema(_RunFieldsSchema):
    ended_at = fields.DateTime(allow_none=True)
    progress_current = fields.Integer(allow_none=True)
    progress_total = fields.Integer(allow_none=True)
    args_preview = fields.String(allow_none=True)
    kwargs_preview = fields.String(allow_none=True)


class RunPageSchema(ma.Schema):
    runs = fields.List(fields.Nested(RunRowSchema), required=True)
    newer = fields.Integer(allow_none=True, metadata={"description": "Give as `after`"})
    older = fields.Integer(allow_none=True, metadata={"description": "Give as `before`"})
    searched_to = fields.Integer(allow_none=True)


class EventSchema(ma.Schema):
    id = fields.Integer(required=True)
    at = fields.DateTime(required=True)
    state = fields.String(required=True)
    attempt = fields.Integer(required=True)
    message = fields.String(allow_none=True)


class ProgressSchema(ma.Schema):
    current = fields.Integer(required=True)
    total = fields.Integer(required=True)
    percent = fields.Integer(required=True)
    message = fields.String(allow_none=True)
    seconds_left = fields.Float(allow_none=True)
    final = fields.Boolean(required=True)


class RunSchema(_RunFieldsSchema):
    args = fields.Raw(allow_none=True)
    kwargs = fields.Raw(allow_none=True)
    worker_host = fields.String(allow_none=True)
    worker_pid = fields.Integer(allow_none=True)
    result = fields.Raw(allow_none=True)
    error_message = fields.String(allow_none=True)
    traceback = fields.String(allow_none=True)
    skip_reason = fields.String(allow_none=True)
    scheduled_for = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(required=True)
    queued_at = fields.DateTime(allow_none=True)
    succeeded_at = fields.DateTime(allow_none=True)
    failed_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    lost_at = fields.DateTime(allow_none=True)
    skipped_at = fields.DateTime(allow_none=True)
    progress = fields.Nested(ProgressSchema)
    events = fields.List(fields.Nested(EventSchema))


class StartRunSchema(ma.Schema):
    task = Text(required=True, max_length=255,
                metadata={"description": "A registered task name", "example": "demo.noop"})
    args = JsonList(load_default=list)
    kwargs = JsonDict(load_default=dict)
    countdown = fields.Float(validate=validate.Range(min=0, max=COUNTDOWN_MAX_S),
                             metadata={"description": "Seconds from now"})
    eta = fields.AwareDateTime(default_timezone=None, metadata={
        "description": "When to run (with a time zone)"})


# --- schedules -----------------------------------------------------------------------------

class ScheduleInputSchema(ma.Schema):
    """A schedule's definition (scheduler.schedules.definition validates it further)."""

    task = Text(max_length=255, metadata={"example": "demo.noop"})
    every = Text(max_length=64, metadata={"description": "Interval: 10s, 5m, 1h30m or seconds",
                                          "example": "10s"})
    cron = Text(max_length=120, metadata={"description": "Five fields, in `tz`"})
    at = Text(max_length=64, metadata={"description": "One-off time, ISO 8601"})
    tz = Text(max_length=64, metadata={"description": "Time zone (default UTC)"})
    args = JsonList()
    kwargs = JsonDict()
    queue = Text(max_length=255)
    start_at = Text(max_length=64)
    end_at = Text(max_length=64)
    overlap = fields.String(validate=validate.OneOf(OVERLAP_POLICIES))
    misfire = fields.String(validate=validate.OneOf(MISFIRE_POLICIES))
    misfire_grace_s = fields.Float(validate=validate.Range(min=0.001, max=COUNTDOWN_MAX_S))


class ScheduleCreateSchema(ScheduleInputSchema):
    name = Text(required=True, validate=[validate.Length(min=1, max=200)])
    task = Text(required=True, max_length=255, metadata={"example": "demo.noop"})
    enabled = fields.Boolean(load_default=True)


class ScheduleSchema(ma.Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    task = fields.String(required=True)
    kind = fields.String(required=True)
    every_s = fields.Float(allow_none=True)
    cron = fields.String(allow_none=True)
    timezone = fields.String(required=True)
    clocked_at = fields.DateTime(allow_none=True)
    args = fields.Raw(allow_none=True)
    kwargs = fields.Raw(allow_none=True)
    queue = fields.String(allow_none=True)
    enabled = fields.Boolean(required=True)
    start_at = fields.DateTime(allow_none=True)
    end_at = fields.DateTime(allow_none=True)
    overlap = fields.String(required=True)
    misfire = fields.String(required=True)
    misfire_grace_s = fields.Float(required=True)
    source = fields.String(required=True)
    last_run_at = fields.DateTime(allow_none=True)
    next_fire_at = fields.DateTime(allow_none=True)
    total_run_count = fields.Integer(required=True)
    description = fields.String(required=True)


class ScheduleListSchema(ma.Schema):
    schedules = fields.List(fields.Nested(ScheduleSchema), required=True)


class StartedSchema(ma.Schema):
    task_id = fields.String(required=True)
    run_id = fields.Integer(allow_none=True)


# --- e-mails -------------------------------------------------------------------------------

class EmailListArgs(ma.Schema):
    state = fields.String(validate=validate.OneOf(EMAIL_STATES))
    to = Text(max_length=254, metadata={"description": "Part of a recipient's address"})
    review = fields.Boolean(metadata={"description": "Only those needing review"})
    before = _id()
    after = _id()
    limit = fields.Integer(validate=validate.Range(min=1, max=200))


class EmailSchema(ma.Schema):
    id = fields.Integer(required=True)
    recipients = fields.List(fields.String(), required=True)
    subject = fields.String(required=True)
    text_body = fields.String(required=True)
    html_body = fields.String(allow_none=True)
    state = fields.String(required=True, validate=validate.OneOf(EMAIL_STATES))
    send_at = fields.DateTime(required=True)
    attempts = fields.Integer(required=True)
    last_error = fields.String(allow_none=True)
    needs_review = fields.Boolean(required=True)
    sent_at = fields.DateTime(allow_none=True)
    run_id = fields.Integer(allow_none=True)
    idempotency_key = fields.String(allow_none=True)
    created_at = fields.DateTime(required=True)


class EmailPageSchema(ma.Schema):
    emails = fields.List(fields.Nested(EmailSchema), required=True)
    newer = fields.Integer(allow_none=True)
    older = fields.Integer(allow_none=True)


class SendEmailSchema(ma.Schema):
    to = fields.List(Text(max_length=254), required=True,
                     validate=validate.Length(min=1, max=100),
                     metadata={"example": ["someone@example.com"]})
    subject = Text(required=True, max_length=998)
    text = Text(required=True, max_length=1_000_000)
    html = Text(max_length=1_000_000)
    send_at = fields.AwareDateTime(default_timezone=None)
    countdown = fields.Float(validate=validate.Range(min=0, max=COUNTDOWN_MAX_S))
    idempotency_key = Text(max_length=255)


# --- workers and queues --------------------------------------------------------------------

class TaskRefSchema(ma.Schema):
    id = fields.String(allow_none=True)
    name = fields.String(allow_none=True)


class WorkerSchema(ma.Schema):
    node = fields.String(required=True)
    pid = fields.Integer(allow_none=True)
    concurrency = fields.Integer(allow_none=True)
    uptime_s = fields.Float(allow_none=True)
    active = fields.List(fields.Nested(TaskRefSchema))
    reserved = fields.List(fields.Nested(TaskRefSchema))
    scheduled = fields.List(fields.Nested(TaskRefSchema))


class WorkerListSchema(ma.Schema):
    workers = fields.List(fields.Nested(WorkerSchema), required=True)


class QueueSchema(ma.Schema):
    name = fields.String(required=True)
    depth = fields.Integer(required=True)


class QueueListSchema(ma.Schema):
    queues = fields.List(fields.Nested(QueueSchema), required=True)
