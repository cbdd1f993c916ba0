"""The admin pages: one blueprint, a module per page; every page needs sign-in."""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, request, url_for
from flask_login import current_user

bp = Blueprint("admin", __name__, url_prefix="/admin")

#: The navigation bar: (endpoint, label).
NAV = [("admin.dashboard", "Dashboard"), ("admin.runs", "Runs"),
       ("admin.schedules", "Schedules"), ("admin.emails", "Outbox"), ("admin.system", "Workers"),
       ("admin.users", "Users")]


@bp.app_context_processor
def navigation() -> dict:
    """The nav links; a section is active on its pages (/admin/runs and /admin/runs/12)."""
    items = []
    for endpoint, label in NAV:
        if endpoint in current_app.view_functions and (
                endpoint != "admin.users"
                or (current_user.is_authenticated and current_user.can("admin"))):
            path = url_for(endpoint)
            active = request.path == path if path == "/admin/" else \
                request.path.startswith(path)
            items.append((path, label, active))
    return {"admin_nav": items}


def init_app(app: Flask) -> None:
    from app.admin import display

    # The page modules register their views on `bp` when imported.
    from app.admin import dashboard, emails, runs, schedules, system, users  # noqa: F401

    display.init_app(app)
    app.register_blueprint(bp)
