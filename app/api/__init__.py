"""The JSON API under /api/v1 (flask-smorest): OpenAPI 3 generated from the code and served
at /api/v1/openapi.json. Bearer tokens only (app.tokens), no session cookies, so no CSRF.
Every error is JSON `{"code": "...", "message": "..."}` (plus `errors` for validation).
"""
from __future__ import annotations

import json
from typing import Any

from flask import Flask, g, request
from flask_smorest import Api as SmorestApi
from flask_smorest import Blueprint as SmorestBlueprint
from sqlalchemy.exc import DataError, OperationalError
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

from app.api.fields import openapi_overrides
from app.api.schemas import ErrorSchema, document_rules
from app.masking import mask_text
from app.security import too_large_message

PREFIX = "/api/v1"
#: The least role for a method; viewer reads, operator acts (admin may do everything).
READ_METHODS = {"GET", "HEAD", "OPTIONS"}


class Parser(FlaskParser):
    """webargs' parser, with every unreadable JSON body a 400 `bad_json`: besides
    JSONDecodeError, Python's json raises ValueError for an integer of more than 4300 digits
    and RecursionError for arrays nested deeper than the stack (both were 500s)."""

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise  # webargs' own handling: 400, or "missing" for an empty body
        except (ValueError, RecursionError) as exc:
            self._handle_invalid_json_error(exc, req)


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = Parser()


bp = Blueprint("api", __name__, url_prefix=PREFIX,
               description="Runs, schedules, e-mails, workers and queues.")

#: A stable `code` for each HTTP status without a more specific one.
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
                413: "too_large", 415: "unsupported_media_type", 422: "validation_error",
                429: "too_many_requests", 500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """An error answer of the API: HTTP status, a stable code, a message for people."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class Api(SmorestApi):
    """flask-smorest, with our error payload documented, and no app-wide error handler:
    the pages keep theirs (app.security); the API's errors are shaped by `api_error`."""

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        pass


def _payload(status: int, code: str, message: str, headers: dict | None = None, **extra):
    # Messages may quote an exception (a broker error): no URL password gets out.
    return {"code": code, "message": mask_text(message), **extra}, status, headers or {}


def api_error(exc: Exception):
    """Every error of the API as {"code", "message"}; never a traceback."""
    from flask import current_app

    from scheduler.enqueue import BrokerUnavailable

    if isinstance(exc, ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _payload(exc.status, exc.code, exc.message, headers, **exc.extra)
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        data = getattr(exc, "data", None) or {}
        messages = data.get("messages")
        if status == 400 and messages and "json" in messages:
            return _payload(400, "bad_json", "The request body is not valid JSON.")
        if status == 422 and messages:
            # webargs: {location: {field: [messages]}}
            return _payload(422, "validation_error", _first_message(messages),
                            errors=messages)
        code = STATUS_CODES.get(status, (exc.name or "error").lower().replace(" ", "_"))
        headers = dict(data.get("headers") or {})
        if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        if status == 413:
            return _payload(413, code, too_large_message(), headers)
        return _payload(status, code, data.get("message") or exc.description or exc.name,
                        headers)
    if isinstance(exc, BrokerUnavailable):
        return _payload(503, "broker_unavailable",
                        "The task queue (Redis) is not reachable; try again shortly.")
    if isinstance(exc, OperationalError):
        current_app.logger.error("database unavailable: %s", type(exc.orig).__name__)
        return _payload(503, "database_unavailable",
                        "The database is not reachable; try again shortly.")
    if isinstance(exc, (DataError, OverflowError)):  # a value PostgreSQL refuses; validation should catch it
        current_app.logger.warning("value refused by the database: %s",
                                   getattr(exc, "orig", exc))
        return _payload(422, "validation_error", "A value is out of range or not allowed.")
    current_app.logger.exception("unhandled API error")
    return _payload(500, "internal_error", "Something went wrong; it has been logged.")


bp.register_error_handler(Exception, api_error)


def _first_message(messages: Any) -> str:
    """`field: message` of the first validation error, for people."""
    path = []
    while isinstance(messages, dict) and messages:
        key = next(iter(messages))
        if key not in ("json", "query", "path"):
            path.append(str(key))
        messages = messages[key]
    while isinstance(messages, list) and messages:
        messages = messages[0]
    text = messages if isinstance(messages, str) else "invalid input"
    return f"{'.'.join(path)}: {text}" if path else text


def require_role(role: str) -> None:
    user = getattr(g, "api_user", None)
    if user is None or not user.can(role):
        raise ApiError(403, "forbidden", f"this action needs the {role} role")


@bp.before_request
def authenticate() -> None:
    """Bearer token required; GET for viewers, everything else for operators and up."""
    from app import tokens

    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized",
                       "an API token is required: Authorization: Bearer <token>")
    user = tokens.user_for(token)
    if user is None:
        raise ApiError(401, "unauthorized", "the API token is not valid or was revoked")
    g.api_user = user
    require_role("viewer" if request.method in READ_METHODS else "operator")


def _is_api_request() -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def init_app(app: Flask) -> None:
    """Register the API; call after app.security.init_app (it wraps its HTTP error handler
    so that unrouted /api/v1 paths, e.g. 404 and 405, answer in the API's shape)."""
    from app import csrf, tokens  # noqa: F401  (tokens: the `flask users token` commands)
    from app.api import emails, runs, schedules, system  # noqa: F401  (register views)

    app.config.setdefault("API_TITLE", "Beatkeeper API")
    app.config.setdefault("API_VERSION", "v1")
    # 3.1: JSON Schema 2020-12, so `propertyNames` (the keys of kwargs) is part of the document.
    app.config.setdefault("OPENAPI_VERSION", "3.1.0")
    app.config.setdefault("OPENAPI_URL_PREFIX", PREFIX)
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("API_SPEC_OPTIONS", {
        "security": [{"bearerAuth": []}],
        "servers": [{"url": "/"}],
        "info": {"description": "Bearer tokens: `flask users token create EMAIL`. "
                                "Viewers may GET; operators and admins may also act."},
    })
    api = Api(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer"})
    api.ma_plugin.converter.add_attribute_function(openapi_overrides)
    api.register_blueprint(bp)
    # What fields alone cannot state: JSON values, rules across fields, the task names.
    task_names = sorted(n for n in app.extensions["celery"].tasks if not n.startswith("celery."))
    document_rules(api.spec, task_names)
    csrf.exempt(bp)
    app.extensions["beatkeeper_api"] = api

    # app.security's error handlers hand /api/ requests to this (unrouted paths: 404, 405).
    app.extensions["api_error"] = api_error
