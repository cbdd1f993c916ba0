"""Configuration: defaults, environment, test dict."""
from __future__ import annotations

import stat

from app import config


def test_without_a_secret_key_a_private_random_one_is_made_once(tmp_path):
    base = {"DATABASE_URL": "postgresql://x@127.0.0.1/x", "REDIS_URL": "redis://127.0.0.1/0",
            "SECRET_KEY": None, "EMBEDDED_PATH": str(tmp_path)}
    first = config.load(base)["SECRET_KEY"]
    assert len(first) >= 48 and first != "dev-only-change-me"
    assert config.load(base)["SECRET_KEY"] == first  # every process of the machine agrees
    mode = stat.S_IMODE((tmp_path / "secret_key").stat().st_mode)
    assert mode == 0o600
    assert config.load({**base, "SECRET_KEY": "given"})["SECRET_KEY"] == "given"


def test_celery_accepts_json_only():
    settings = config.celery_settings("redis://127.0.0.1/0")
    assert settings["accept_content"] == ["json"]
    assert settings["task_serializer"] == settings["result_serializer"] == "json"
    assert settings["result_backend"] is None
