"""Admin page: users and their roles (admins only)."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from app.admin import bp
from app.auth import create_user, role_required
from models import ROLES, User, db


@bp.get("/users")
@role_required("admin")
def users() -> str:
    rows = db.session.scalars(select(User).order_by(User.email)).all()
    return render_template("admin/users.html", users=rows, roles=ROLES)


@bp.post("/users")
@role_required("admin")
def user_create():
    try:
        user = create_user(request.form.get("email", ""), request.form.get("role", ""),
                           request.form.get("password", ""))
    except ValueError as exc:
        db.session.rollback()
        flash(f"Not created: {exc}", "error")
    else:
        flash(f"Created {user.email} ({user.role}).", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>")
@role_required("admin")
def user_update(user_id: int):
    """Change a user's role or switch the account on or off; never lock out the last admin."""
    user = db.session.get(User, user_id)
    if user is None:
        flash(f"No user {user_id}.", "error")
        return redirect(url_for("admin.users"))
    role = request.form.get("role", user.role)
    active = request.form.get("active", "1" if user.active else "0") == "1"
    if role not in ROLES:
        flash(f"Role must be one of {', '.join(ROLES)}.", "error")
        return redirect(url_for("admin.users"))
    other_admins = db.session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.active, User.id != user.id))
    if user.role == "admin" and (role != "admin" or not active) and not other_admins:
        flash("Not changed: this is the last active admin.", "error")
        return redirect(url_for("admin.users"))
    user.role, user.active = role, active
    db.session.commit()
    if user.id == current_user.id and not active:
        flash("You switched off your own account.", "info")
    flash(f"{user.email}: {user.role}, {'active' if user.active else 'switched off'}.", "info")
    return redirect(url_for("admin.users"))
