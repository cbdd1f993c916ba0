"""Entry point of `celery -A worker worker` and `celery -A worker beat`."""
from app import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
