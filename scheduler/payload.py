"""How a call's arguments and a run's result are stored.

Two copies of a call's arguments are kept. The display copy (`job_runs.args`/`kwargs`,
jsonb) is what the pages, the API and the argument search read: Celery's own JSON encoding
(a date is `{"__type__": "date", "__value__": "2026-12-02"}`, as kombu puts it on the wire),
capped at RESULT_MAX_BYTES, with U+0000 and lone surrogates replaced because jsonb cannot hold
them. The exact copy (`job_runs.call_json`, text) is what Celery would have put on the wire,
never capped: every publish of a row's message (a countdown's release, recovery, a re-run)
decodes that, so the task receives what `apply_async` was given.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask import current_app
from kombu.exceptions import EncodeError
from kombu.utils.json import dumps as celery_dumps
from kombu.utils.json import loads as celery_loads

#: What PostgreSQL's text and jsonb cannot hold: U+0000 and lone UTF-16 surrogates.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|d[89a-f])", re.I)

#: Length of the preview kept when a document is over the size cap.
PREVIEW_CHARS = 4096


class CallNotKept(ValueError):
    """A row that kept no exact copy of its call (recorded before there was one, and its
    display copy was capped): its message cannot be made again."""


@dataclass(frozen=True)
class StoredCall:
    """A call's arguments as the row stores them: display copies and the exact message."""

    args: str
    kwargs: str
    call_json: str


def encode_call(args: Any, kwargs: Any, max_bytes: int | None = None) -> StoredCall:
    """Both copies of a call. Raises kombu's EncodeError for a value Celery's JSON cannot
    encode, as `apply_async` itself would."""
    args, kwargs = list(args or ()), dict(kwargs or {})
    try:
        exact = celery_dumps({"args": args, "kwargs": kwargs})
    except (TypeError, ValueError) as exc:
        raise EncodeError(exc) from exc
    return StoredCall(capped_json(args, max_bytes), capped_json(kwargs, max_bytes), exact)


def decode_call(call_json: str | None, args: Any = None, kwargs: Any = None
                ) -> tuple[list[Any], dict[str, Any]]:
    """The (args, kwargs) to publish: from the exact copy, or, for rows written before it
    existed, from a display copy that was not capped."""
    if call_json is not None:
        call = celery_loads(call_json)
        return list(call["args"]), dict(call["kwargs"])
    args = [] if args is None else args
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(args, list) or not isinstance(kwargs, dict) \
            or "__truncated__" in kwargs or "__unserializable__" in kwargs:
        raise CallNotKept("its arguments were too big or not JSON and no exact copy was kept")
    # The display copy is Celery's JSON: decode its typed values as a worker would.
    return list(celery_loads(json.dumps(args))), dict(celery_loads(json.dumps(kwargs)))


def capped_json(value: Any, max_bytes: int | None = None) -> str:
    """Celery's JSON text of value for a jsonb column; over max_bytes, a truncation marker."""
    if max_bytes is None:
        max_bytes = current_app.config["RESULT_MAX_BYTES"]
    try:
        # NaN and Infinity are not JSON (jsonb refuses them).
        doc = celery_dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        doc = json.dumps({"__unserializable__": repr(value)[:PREVIEW_CHARS]})
    if _UNSTORABLE_ESCAPE.search(doc):
        # PostgreSQL's jsonb cannot hold U+0000 or a lone surrogate: stored as U+FFFD (the
        # only rewrite).
        doc = json.dumps(_without_nul(json.loads(doc)))
    if len(doc) > max_bytes:
        return json.dumps(
            {"__truncated__": True, "bytes": len(doc.encode()), "preview": doc[:PREVIEW_CHARS]}
        )
    return doc


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def without_nul(text_value: str | None) -> str | None:
    """Text for a PostgreSQL text column, which cannot hold U+0000 (nor a lone surrogate)."""
    return _UNSTORABLE.sub("\ufffd", text_value) if text_value else text_value
