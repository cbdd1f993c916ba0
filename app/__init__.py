"""Beatkeeper's Flask application factory: the one way every process is built."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask_mail import Mail
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect

from app import config
from models import db
from scheduler import celery_init_app

migrate = Migrate()
csrf = CSRFProtect()
mail = Mail()

#: Alembic's folder (Flask-Migrate's default name is "migrations"; ours is "alembic").
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "alembic"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: web, worker, beat, migrations and tests all start here."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(config.load(test_config))

    from app import (admin, api, auth, demo, emails_cli, health, jobs_cli, mailbox,
                     schedules_cli, security)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    auth.init_app(app)  # its sign-in check runs before the CSRF check
    csrf.init_app(app)
    mail.init_app(app)
    celery_init_app(app)

    security.init_app(app)
    app.register_blueprint(demo.bp)
    csrf.exempt(demo.longtask)
    admin.init_app(app)
    api.init_app(app)
    if app.config["MAIL_CAPTURE_DIR"]:
        app.register_blueprint(mailbox.bp)
    schedules_cli.init_app(app)
    emails_cli.init_app(app)
    health.init_app(app)
    jobs_cli.init_app(app)
    return app
