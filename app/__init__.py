"""Beatkeeper's Flask application factory: the one way every process is built."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, jsonify
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import OperationalError

from app import config
from models import db
from scheduler import celery_init_app
from scheduler.outbox import mail

migrate = Migrate()
csrf = CSRFProtect()

#: Alembic's folder (Flask-Migrate's default name is "migrations"; ours is "alembic").
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "alembic"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: web, worker, beat, migrations and tests all start here."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(config.load(test_config))

    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    csrf.init_app(app)
    mail.init_app(app)
    celery_init_app(app)

    from app import demo, emails_cli, mailbox, schedules_cli

    app.register_blueprint(demo.bp)
    if app.config["MAIL_CAPTURE_DIR"]:
        app.register_blueprint(mailbox.bp)
    schedules_cli.init_app(app)
    emails_cli.init_app(app)
    _register_errors(app)
    return app


def _register_errors(app: Flask) -> None:
    @app.errorhandler(OperationalError)
    def database_unavailable(exc: OperationalError):
        app.logger.error("database unavailable: %s", type(exc.orig).__name__)
        return jsonify(error="database_unavailable",
                       message="The database is not reachable; try again shortly."), 503

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError):
        return jsonify(error="csrf_failed", message=exc.description), 400
