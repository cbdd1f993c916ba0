"""Marshmallow schemas of the API: what it takes (validated) and what it answers (documented
in the OpenAPI document)."""
from __future__ import annotations

from datetime import timezone
from typing import Any

import marshmallow as ma
from marshmallow import ValidationError, fields, validate

from app.api.fields import (
    COUNTDOWN_MAX_S, CRON_PATTERN, EMAIL_PATTERN, EVERY_PATTERN, INT_MAX, JSON_VALUE,
    JSON_VALUE_SCHEMA, JsonDict, JsonList, LINE_PATTERN, NAME_PATTERN, TIME_ZONES, TaskName,
    Text, When, WhenText, _id,
)
from models import RunState
from models.email import EMAIL_STATES
from models.schedule import MISFIRE_POLICIES, OVERLAP_POLICIES
from scheduler.history.queries import MAX_PAGE_SIZE


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
    """The runs page's filters and key paging (scheduler.history.queries.RunFilters)."""

    state = fields.List(fields.String(validate=validate.OneOf(STATES)),
                        metadata={"description": "Any of these states (repeat the parameter)"})
    task = Text(max_length=255)
    trigger = Text(max_length=255)
    schedule = _id(INT_MAX, metadata={"description": "Schedule id"})
    from_ = When(timezone.utc, data_key="from",
                 metadata={"description": "Created at or after (UTC without an offset)"})
    to = When(timezone.utc, metadata={"description": "Created before (UTC without an offset)"})
    q = Text(max_length=255, metadata={
        "description": "A task id (or its prefix, 8+ characters), else text in the arguments"})
    before = _id(metadata={"description": "The page of runs older than this id "
                                          "(the `older` of a page)"})
    after = _id(metadata={"description": "The page of runs newer than this id "
                                         "(the `newer` of a page)"})
    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


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
    """Start a task: `countdown` or `eta`, not both (`not` in the document)."""

    task = TaskName(required=True)
    args = JsonList(load_default=list)
    kwargs = JsonDict(load_default=dict)
    countdown = fields.Float(validate=validate.Range(min=0, max=COUNTDOWN_MAX_S),
                             metadata={"description": "Seconds from now (not with `eta`)"})
    eta = When(metadata={"description": "When to run (with a time zone; not with "
                                        "`countdown`)"})

    @ma.validates_schema
    def _countdown_or_eta(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("countdown") is not None and data.get("eta") is not None:
            raise ValidationError("give countdown or eta, not both", "eta")


# --- schedules -----------------------------------------------------------------------------

class ScheduleInputSchema(ma.Schema):
    """A schedule's definition (scheduler.schedules.definition validates it further): at most
    one of `every`, `cron` and `at`; `end_at` after `start_at` (the one rule the document
    states in words only)."""

    task = TaskName()
    every = Text(max_length=64, pattern=EVERY_PATTERN,
                 metadata={"description": "Interval: a number (at least 1) and a unit ms, s, "
                                          "m, h or d; seconds without a unit",
                           "example": "10s"})
    cron = Text(max_length=120, pattern=CRON_PATTERN,
                metadata={"description": "Five fields (minute hour day-of-month month "
                                         "day-of-week) or a macro (@hourly, @daily, ...), in "
                                         "`tz`; a range's start is not above its end",
                          "format": "cron", "example": "*/5 * * * *"})
    at = WhenText(metadata={"description": "One-off time, ISO 8601 (read in `tz` without an "
                                           "offset)"})
    tz = Text(max_length=64,
              metadata={"description": "IANA time zone (default UTC)", "enum": TIME_ZONES,
                        "example": "Europe/Paris"})
    args = JsonList()
    kwargs = JsonDict()
    queue = Text(max_length=255)
    start_at = WhenText(metadata={"description": "No fire before this time"})
    end_at = WhenText(metadata={"description": "No fire after this time; after `start_at`"})
    overlap = fields.String(validate=validate.OneOf(OVERLAP_POLICIES))
    misfire = fields.String(validate=validate.OneOf(MISFIRE_POLICIES))
    misfire_grace_s = fields.Float(validate=validate.Range(min=0.001, max=COUNTDOWN_MAX_S))


class ScheduleCreateSchema(ScheduleInputSchema):
    """A new schedule: a task and exactly one of `every`, `cron` and `at` (`oneOf`)."""

    name = Text(required=True, max_length=200, pattern=NAME_PATTERN,
                metadata={"description": "1 to 200 characters, stripped"})
    task = TaskName(required=True)
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
    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


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
    """An e-mail: `send_at` or `countdown`, not both (`not` in the document)."""

    to = fields.List(Text(max_length=254, pattern=EMAIL_PATTERN),
                     required=True, validate=validate.Length(min=1, max=100),
                     metadata={"example": ["someone@example.com"]})
    subject = Text(required=True, max_length=998, pattern=LINE_PATTERN)
    text = Text(required=True, max_length=1_000_000)
    html = Text(max_length=1_000_000)
    send_at = When(metadata={"description": "When to send (not with `countdown`)"})
    countdown = fields.Float(validate=validate.Range(min=0, max=COUNTDOWN_MAX_S),
                             metadata={"description": "Seconds from now (not with `send_at`)"})
    idempotency_key = Text(max_length=255)

    @ma.validates_schema
    def _send_at_or_countdown(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("send_at") is not None and data.get("countdown") is not None:
            raise ValidationError("give send_at or countdown, not both", "send_at")


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


# --- what the document states beyond the fields ----------------------------------------------

_TIMINGS = ("every", "cron", "at")
#: Rules across fields, added to the component schemas (by name) by app.api.init_app.
SCHEMA_RULES: dict[str, dict[str, Any]] = {
    "StartRun": {"not": {"required": ["countdown", "eta"]}},
    "SendEmail": {"not": {"required": ["send_at", "countdown"]}},
    "ScheduleCreate": {"oneOf": [{"required": [t]} for t in _TIMINGS]},
    "ScheduleInput": {"not": {"anyOf": [{"required": [a, b]} for i, a in enumerate(_TIMINGS)
                                        for b in _TIMINGS[i + 1:]]}},
}


def document_rules(spec: Any, task_names: list[str]) -> None:
    """Complete the OpenAPI document with what fields alone cannot say: the JsonValue
    component, the rules across fields (SCHEMA_RULES) and the registered task names."""
    spec.components.schema(JSON_VALUE, JSON_VALUE_SCHEMA)
    schemas = spec.components.schemas
    for name, rules in SCHEMA_RULES.items():
        schemas[name].update(rules)
    for component in schemas.values():
        for prop in (component.get("properties") or {}).values():
            if prop.pop("x-enum-of", None) == "registered tasks":
                prop["enum"] = task_names
