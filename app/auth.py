"""Sign-in (Flask-Login), roles, and the `flask users` commands."""
from __future__ import annotations

import secrets
from datetime import datetime, timezone
from functools import wraps
from typing import Callable
from urllib.parse import urlsplit

import click
from flask import (Blueprint, Flask, abort, flash, redirect, render_template, request, session,
                   url_for)
from flask.cli import AppGroup
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from sqlalchemy import func, select

from models import ROLES, User, db

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to see that page."
users_cli = AppGroup("users", help="Create and list the users of the admin pages.")

#: Shortest password accepted for a user.
MIN_PASSWORD_LEN = 10


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id)) if user_id.isdigit() else None


def role_required(role: str) -> Callable:
    """Sign-in required, and at least `role`; others get 403."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not current_user.can(role):
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorate


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never redirect a signed-in user to another host."""
    if target and target.startswith("/") and not target.startswith("//") \
            and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("admin.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        email = request.form.get("email", "").strip().lower()
        user = db.session.scalar(select(User).where(func.lower(User.email) == email))
        if user is None or not user.active or not user.check_password(
                request.form.get("password", "")):
            flash("Wrong e-mail or password.", "error")
            return render_template("admin/login.html", email=email), 401
        session.clear()  # a fresh session on sign-in (no fixation)
        login_user(user)
        user.last_login_at = datetime.now(timezone.utc)
        db.session.commit()
        return redirect(_safe_next(request.args.get("next")))
    return render_template("admin/login.html", email="")


@bp.post("/logout")
def logout():
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


def create_user(email: str, role: str, password: str) -> User:
    email = email.strip().lower()
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if "@" not in email or len(email) > 254:
        raise ValueError("a valid e-mail address is required")
    if len(password) < MIN_PASSWORD_LEN:
        raise ValueError(f"the password needs at least {MIN_PASSWORD_LEN} characters")
    if db.session.scalar(select(User).where(func.lower(User.email) == email)):
        raise ValueError(f"a user {email} already exists")
    user = User(email=email, role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


@users_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@click.option("--password", help="Taken from here, else asked for (never echoed).")
def create_command(email: str, role: str, password: str | None) -> None:
    """Create a user."""
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_user(email, role, password)
    except ValueError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"created {user.email} ({user.role})")


@users_cli.command("list")
def list_command() -> None:
    """List the users."""
    from app.cli_output import echo_rows

    rows = [{"email": u.email, "role": u.role, "active": u.active,
             "last_login": u.last_login_at.isoformat() if u.last_login_at else None}
            for u in db.session.scalars(select(User).order_by(User.email))]
    echo_rows(rows, ("email", "role", "active", "last_login"), as_json=False)


@users_cli.command("ensure-admin")
@click.option("--email", envvar="ADMIN_EMAIL", default="admin@localhost", show_default=True)
@click.option("--password", envvar="ADMIN_PASSWORD")
def ensure_admin_command(email: str, password: str | None) -> None:
    """On an empty users table, create the first admin (ADMIN_EMAIL / ADMIN_PASSWORD, or a
    generated password printed once)."""
    if db.session.scalar(select(func.count()).select_from(User)):
        return
    generated = None if password else secrets.token_urlsafe(12)
    try:
        user = create_user(email, "admin", password or generated)
    except ValueError as exc:
        raise click.ClickException(str(exc))
    if generated:
        # Printed once, here; it is stored only as a hash.
        click.echo(f"created the first admin: {user.email} with password {generated}")
    else:
        click.echo(f"created the first admin: {user.email} (password from ADMIN_PASSWORD)")


#: Blueprints whose every page and action needs a signed-in user.
PRIVATE_BLUEPRINTS = {"admin", "mailbox"}


def require_sign_in():
    """Anonymous requests to private pages go to the sign-in page, whatever their method.

    Registered before CSRFProtect's check, so an anonymous POST is sent to sign in rather
    than answered 400; roles are checked by each action (role_required), after the CSRF check.
    """
    if request.blueprint in PRIVATE_BLUEPRINTS and not current_user.is_authenticated:
        return login_manager.unauthorized()
    return None


def init_app(app: Flask) -> None:
    """Call before CSRFProtect.init_app: before_request functions run in this order."""
    login_manager.init_app(app)
    app.before_request(require_sign_in)
    app.register_blueprint(bp)
    app.cli.add_command(users_cli)
