"""Security headers, cookie flags, and error pages that never show a traceback."""
from __future__ import annotations

from flask import Flask, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

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


def _error(code: int, name: str, message: str, exc: Exception | None = None):
    api_error = current_app.extensions.get("api_error")
    if api_error is not None and exc is not None and request.path.startswith("/api/"):
        return api_error(exc)  # the API's own shape: {"code", "message"}
    if wants_json():
        return jsonify(error=name, message=message), code
    return render_template("admin/error.html", code=code, title=name.replace("_", " "),
                           message=message), code


def init_app(app: Flask) -> None:
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

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _error(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                      exc.description or "", exc)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return _error(500, "internal_error", "Something went wrong; it has been logged.")
