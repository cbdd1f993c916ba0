"""Admin page: the dashboard."""
from __future__ import annotations

from flask import render_template

from app.admin import bp


@bp.get("/")
def dashboard() -> str:
    return render_template("admin/dashboard.html")
