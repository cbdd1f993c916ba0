"""The field types and rules the API's schemas share: texts PostgreSQL can store, date-times
with a year range, JSON values a Python call can carry, ids; each states in the OpenAPI
document what it enforces."""
from __future__ import annotations

import json
import math
import re
import zoneinfo
from datetime import timezone
from typing import Any

import marshmallow as ma
from marshmallow import ValidationError, fields, validate

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
