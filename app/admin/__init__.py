"""The admin pages: one blueprint, a module per page; every page needs sign-in."""
from __future__ import annotations

from flask import Blueprint, current_app
from flask_login import login_required

bp = Blueprint("admin", __name__, url_prefix="/admin")

#: The navigation bar: (endpoint, label).
NAV = [("admin.dashboard", "Dashboard"), ("admin.runs", "Runs"),
       ("admin.schedules", "Schedules"), ("admin.emails", "Outbox"), ("admin.system", "Workers")]


@bp.app_context_processor
def navigation() -> dict:
    return {"admin_nav": [(e, label) for e, label in NAV if e in current_app.view_functions]}


@bp.before_request
@login_required
def require_sign_in() -> None:
    """Every admin page and action needs a signed-in user; actions check the role too."""


# The page modules register their views on `bp`.
from app.admin import dashboard, emails, runs, schedules, system  # noqa: E402,F401
