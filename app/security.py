"""Security headers, cookie flags, refusal of input nothing can store, and error pages that
never show a traceback."""
from __future__ import annotations

from flask import Flask, abort, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

#: No inline scripts or styles anywhere: every script and stylesheet is a file of the app.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def wants_json() -> bool:
    """API clients and scripts get JSON errors; browsers get a page."""
    if request.path.startswith("/api/") or request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def too_large_message() -> str:
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if not limit:
        return "The request is too large."
    size = f"{limit // 1024 // 1024} MiB" if limit % (1024 * 1024) == 0 else f"{limit:,} bytes"
    return f"The request is too large: at most {size} is accepted."


def _has_nul(fields) -> bool:
    """Whether a key or any of the values of a MultiDict (query or form) holds a NUL."""
    return any("\x00" in key or "\x00" in value for key, value in fields.items(multi=True))


def refuse_nul_input() -> None:
    """400 for a NUL character in the path, the query or a form: PostgreSQL's text cannot
    hold one, so a query or write with it failed with a 500 deep inside. JSON
    bodies are validated by the API's schemas (app.api.schemas)."""
    if "\x00" in request.path or _has_nul(request.args):
        abort(400, description="NUL characters are not accepted in the URL.")
    if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.mimetype in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        # request.form may raise 413: over MAX_CONTENT_LENGTH or Flask's form limits.
        if _has_nul(request.form):
            abort(400, description="NUL characters are not accepted in a form.")


def _error(code: int, name: str, message: str, exc: Exception | None = None):
    api_error = current_app.extensions.get("api_error")
    if api_error is not None and exc is not None and request.path.startswith("/api/"):
        return api_error(exc)  # the API's own shape: {"code", "message"}
    if wants_json():
        return jsonify(error=name, message=message), code
    return render_template("admin/error.html", code=code, title=name.replace("_", " "),
                           message=message), code


def init_app(app: Flask) -> None:
    # First of the request hooks, so that no other hook or view sees such input.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_nul_input)

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError):
        return _error(400, "csrf_failed", exc.description)

    @app.errorhandler(OperationalError)
    def database_unavailable(exc: OperationalError):
        app.logger.error("database unavailable: %s", type(exc.orig).__name__)
        return _error(503, "database_unavailable",
                      "The database is not reachable; try again shortly.")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge):
        return _error(413, "too_large", too_large_message(), exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _error(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                      exc.description or "", exc)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return _error(500, "internal_error", "Something went wrong; it has been logged.")
