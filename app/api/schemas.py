"""Marshmallow schemas of the API: what it takes (validated) and what it answers (documented
in the OpenAPI document)."""
from __future__ import annotations

import json
import math
import re
import zoneinfo
from datetime import timezone
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


#: Text PostgreSQL can store: no U+0000 (the pattern); no lone UTF-16 surrogate either (not
#: valid Unicode, so said in words: regular expressions disagree on surrogates).
STORABLE = "[^\\u0000]"
STORABLE_PATTERN = f"^{STORABLE}*$"
#: White space as Python's str.strip() and re's \\s see it, spelled out (ECMA 262's \\s differs).
_SPACE = "\\t-\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
#: The years of a date-time the code takes: Python's datetime holds 0001 to 9999, and a time
#: with an offset must stay in that range once converted to UTC (year 0001 with +05:00 does
#: not), so the first and the last year are left out; years before 1900 are fine.
YEAR_PATTERN = ("^(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}"
                "|99[0-8][0-9])-")
#: An interval: a number of at least 1 (up to 6 decimals) and an optional unit, e.g. 10s,
#: 250ms, 1.5h, 90 (seconds); what scheduler.slots.parse_every reads, made stateable.
EVERY_PATTERN = "^0*[1-9][0-9]{0,11}(?:\\.[0-9]{1,6})?(?:[mM]?[sS]|[mMhHdD])?$"
#: A five-field cron expression (values in range, names of months and weekdays, steps of at
#: least 1) or a macro. A range's start must not exceed its end (format `cron`).
_CRON_NAMES_M = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_CRON_NAMES_D = "sun|mon|tue|wed|thu|fri|sat"


def _ci(words: str) -> str:
    """A case-insensitive spelling of `a|b` without flags (ECMA 262 patterns have none)."""
    return "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in w) for w in words.split("|"))


def _cron_field(value: str) -> str:
    item = f"(?:\\*|(?:{value})(?:-(?:{value}))?)(?:/0*[1-9][0-9]*)?"
    return f"{item}(?:,{item})*"


_CRON_FIELDS = [
    "0*[0-5]?[0-9]",                                   # minute 0-59
    "0*(?:1?[0-9]|2[0-3])",                            # hour 0-23
    "0*(?:[1-9]|[12][0-9]|3[01])",                     # day of month 1-31
    f"0*(?:[1-9]|1[0-2])|{_ci(_CRON_NAMES_M)}",        # month 1-12 or jan..dec
    f"0*[0-7]|{_ci(_CRON_NAMES_D)}",                   # day of week 0-7 or sun..sat
]
CRON_PATTERN = ("^[ ]*(?:" + "[ ]+".join(_cron_field(f) for f in _CRON_FIELDS) + "|"
                + _ci("@yearly|@annually|@monthly|@weekly|@daily|@midnight|@hourly")
                + ")[ ]*$")
#: The time zones the code knows (IANA names of the system's database).
TIME_ZONES = sorted(zoneinfo.available_timezones() | {"UTC"})
#: An e-mail address as scheduler.outbox.check_address takes it.
EMAIL_PATTERN = (f"^[^@{_SPACE}\\u0000-\\u001f\\u007f<>(),;:\"\\[\\]\\\\]{{1,64}}@"
                 "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                 "(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
#: One line of text (an e-mail subject): no control characters.
LINE_PATTERN = "^[^\\u0000-\\u001f\\u007f]*$"
#: Text with something besides white space (a name, stripped).
NAME_PATTERN = f"^{STORABLE}*[^{_SPACE}\\u0000]{STORABLE}*$"
#: Largest finite JSON number (an IEEE double): larger ones read as infinity.
DOUBLE_MAX = 1.7976931348623157e308


def _storable_text(value: str) -> None:
    """PostgreSQL text takes no NUL, and UTF-8 no lone surrogate."""
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise ValidationError("must be valid Unicode text")


class Text(fields.String):
    """A string PostgreSQL can store; the document states it as a `pattern` (STORABLE_PATTERN
    unless a stricter `pattern` is given: the rule of the code behind, scheduler.slots or
    scheduler.outbox, which refuses with its own error code)."""

    def __init__(self, *, max_length: int | None = None, pattern: str | None = None,
                 **kwargs: Any) -> None:
        validators = list(kwargs.pop("validate", None) or [])
        validators.append(_storable_text)
        if max_length is not None:
            validators.append(validate.Length(max=max_length))
        metadata = dict(kwargs.pop("metadata", None) or {})
        metadata.setdefault("pattern", pattern or STORABLE_PATTERN)
        super().__init__(validate=validators, metadata=metadata, **kwargs)


class TaskName(Text):
    """A registered task's name: the document lists them (`enum`, filled in by
    app.api.init_app from the Celery app); the views refuse others (`unknown_task`)."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"description": "A registered task name", "example": "demo.noop",
                    "x-enum-of": "registered tasks", **(kwargs.pop("metadata", None) or {})}
        super().__init__(max_length=255, metadata=metadata, **kwargs)


class When(fields.AwareDateTime):
    """A date-time with a time zone, years 0002 to 9998 (YEAR_PATTERN)."""

    def __init__(self, default_timezone: Any = None, **kwargs: Any) -> None:
        metadata = {"pattern": YEAR_PATTERN, **(kwargs.pop("metadata", None) or {})}
        super().__init__(default_timezone=default_timezone, metadata=metadata,
                         validate=_year_in_range, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        # In UTC: PostgreSQL takes offsets up to 15:59 only, RFC 3339 allows 23:59.
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(timezone.utc)
        except OverflowError:
            raise ValidationError("the year must be 0002 to 9998") from None


def _year_in_range(value: Any) -> None:
    if not 1 <= value.year <= 9999:
        raise ValidationError("the year must be 0002 to 9998")


class WhenText(Text):
    """A date-time given as text to scheduler.schedules (read in `tz` without an offset)."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"format": "date-time", **(kwargs.pop("metadata", None) or {})}
        super().__init__(max_length=64, pattern=YEAR_PATTERN, metadata=metadata,
                         validate=[_text_year_in_range], **kwargs)


def _text_year_in_range(value: str) -> None:
    if not re.match(YEAR_PATTERN, value.strip()):
        raise ValidationError("the year must be 0002 to 9998 (ISO 8601, e.g. "
                              "2026-12-24T18:00+01:00)")


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


#: The OpenAPI component of a JSON value as args and kwargs take it: any JSON, null included,
#: with strings (and keys) PostgreSQL can store, nested at most JSON_MAX_DEPTH levels. Celery's
#: JSON encodings such as {"__type__": "date", "__value__": "2026-12-02"} are plain objects
#: here: they are stored as given and decoded by Celery on the worker.
JSON_VALUE = "JsonValue"
_JSON_REF = {"$ref": f"#/components/schemas/{JSON_VALUE}"}
JSON_VALUE_SCHEMA = {
    "description": "Any JSON value (null included) a Python call can take as an argument; "
                   "strings and keys without U+0000 (pattern) and valid Unicode (no lone "
                   "surrogate such as \"\\ud800\"); nested at most "
                   f"{JSON_MAX_DEPTH} levels (x-max-depth).",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "integer"},
        {"type": "number", "minimum": -DOUBLE_MAX, "maximum": DOUBLE_MAX},
        {"type": "string", "pattern": STORABLE_PATTERN},
        {"type": "array", "items": _JSON_REF},
        {"type": "object", "additionalProperties": _JSON_REF,
         "propertyNames": {"pattern": STORABLE_PATTERN}},
    ],
    "x-max-depth": JSON_MAX_DEPTH,
}


def parse_json_arguments(text: str, kind: type, label: str) -> Any:
    """`args` (kind list) or `kwargs` (kind dict) typed as JSON text (CLI, schedule form):
    any JSON value as the API takes it, null included; ValueError with a message otherwise
    (also for NaN and Infinity, which Python's json reads but JSON has not)."""
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON (numbers must be finite)")

    try:
        value = json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise ValueError(f"{label}: nested more than {JSON_MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise ValueError(f"{label} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ValueError(f"{label} must be a JSON {'array' if kind is list else 'object'}")
    try:
        storable_json(value)
    except ValidationError as exc:
        raise ValueError(f"{label}: {' '.join(map(str, exc.messages))}") from None
    return value


class JsonList(fields.List):
    """Positional arguments: a JSON array of any values, null included."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"openapi": {"items": _JSON_REF}, **(kwargs.pop("metadata", None) or {})}
        super().__init__(fields.Raw(allow_none=True), validate=storable_json,
                         metadata=metadata, **kwargs)


class JsonDict(fields.Dict):
    """Keyword arguments: a JSON object of any values, null included."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"openapi": {"additionalProperties": _JSON_REF,
                                "propertyNames": {"pattern": STORABLE_PATTERN}},
                    **(kwargs.pop("metadata", None) or {})}
        super().__init__(keys=fields.String(), values=fields.Raw(allow_none=True),
                         validate=storable_json, metadata=metadata, **kwargs)


def openapi_overrides(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """apispec attribute function (runs last): a field's `openapi` metadata, as given."""
    return dict(field.metadata.get("openapi") or {})


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
    from_ = When(timezone.utc, data_key="from",
                 metadata={"description": "Created at or after (UTC without an offset)"})
    to = When(timezone.utc, metadata={"description": "Created before (UTC without an offset)"})
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
