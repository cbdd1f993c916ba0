"""API tokens: create, revoke, list (`flask users token ...`), and the lookup of a bearer
token. A token is `bk_` + 32 random bytes (URL-safe); only its SHA-256 is stored, as it is
high-entropy (no salt or slow hash needed), and it is printed once, when created."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

import click
from flask.cli import AppGroup
from sqlalchemy import func, select

from app.auth import users_cli
from models import ApiToken, User, db

PREFIX = "bk_"
#: last_used_at is written at most this often per token (not one write per request).
TOUCH_EVERY = timedelta(minutes=1)

token_cli = AppGroup("token", help="Create, list and revoke API tokens.")
users_cli.add_command(token_cli)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def create_token(email: str, name: str = "") -> tuple[ApiToken, str]:
    """A new token for the user `email`; returns the row and the token (shown once)."""
    user = db.session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
    if user is None:
        raise ValueError(f"no user {email}")
    if len(name) > 100:
        raise ValueError("the name has at most 100 characters")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=hash_token(token),
                   prefix=token[:len(PREFIX) + 6])
    db.session.add(row)
    db.session.commit()
    return row, token


def revoke_token(token_id: int) -> ApiToken:
    row = db.session.get(ApiToken, token_id)
    if row is None:
        raise ValueError(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(timezone.utc)
        db.session.commit()
    return row


def user_for(token: str) -> User | None:
    """The active user of a valid, unrevoked token, or None."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token),
                                                   ApiToken.revoked_at.is_(None)))
    if row is None or not row.user.active:
        return None
    now = datetime.now(timezone.utc)
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        row.last_used_at = now
        db.session.commit()
    return row.user


@token_cli.command("create")
@click.argument("email")
@click.option("--name", default="", help="What the token is for.")
def create_command(email: str, name: str) -> None:
    """Create a token for the user EMAIL; it is printed once."""
    try:
        row, token = create_token(email, name)
    except ValueError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"token {row.id} for {row.user.email} ({row.user.role}); store it now, "
               "it is not shown again:", err=True)
    click.echo(token)


@token_cli.command("revoke")
@click.argument("token_id", type=int)
def revoke_command(token_id: int) -> None:
    """Revoke the token TOKEN_ID (see `list`)."""
    try:
        row = revoke_token(token_id)
    except ValueError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"revoked token {row.id} ({row.prefix}...)")


@token_cli.command("list")
def list_command() -> None:
    """List the tokens (never the secrets)."""
    from app.cli_output import echo_rows

    def iso(t):
        return t.isoformat(timespec="seconds") if t else None

    rows = [{"id": t.id, "user": t.user.email, "role": t.user.role, "name": t.name,
             "prefix": t.prefix + "...", "created": iso(t.created_at),
             "last_used": iso(t.last_used_at), "revoked": iso(t.revoked_at)}
            for t in db.session.scalars(select(ApiToken).order_by(ApiToken.id))]
    echo_rows(rows, ("id", "user", "role", "name", "prefix", "created", "last_used",
                     "revoked"), as_json=False)
