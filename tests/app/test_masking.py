"""app.masking: passwords in URLs and secret settings appear nowhere: not in pages, the API,
the CLI, `./run`'s log, a worker's log or `celery inspect conf`."""
from __future__ import annotations

import io
import json
import re
import socket
import subprocess
from urllib.parse import urlsplit, urlunsplit

import pytest

from app import create_app, launcher
from app.masking import MASK, mask_settings, mask_text, mask_url, secret_values
from tests.helpers import BIN, PROJECT, CeleryProcess, make_user, sign_in, test_settings

#: Recognisable secrets: none of them may be found in any output.
PASSWORD = "s3cr3t-pw-XYZ"
MAIL_PASSWORD = "mail-pw-QRS"
SECRET_KEY = "flask-key-JKL"
METRICS_TOKEN = "metrics-tok-UVW"
SECRETS = (PASSWORD, MAIL_PASSWORD, SECRET_KEY, METRICS_TOKEN)


def assert_no_secret(text: str, where: str, secrets=SECRETS) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} shown in {where}"


def with_credentials(url: str, user: str, password: str) -> tuple[str, str]:
    """The URL with user:password in it, and the password; a URL that has a password
    already (an external test server) keeps its own."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or user}:{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc)), password


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the helper ------------------------------------------------------------------------------

@pytest.mark.parametrize("url,shown", [
    ("postgresql://bob:s3cr3t@db:5432/jobs?sslmode=require",
     "postgresql://bob:***@db:5432/jobs?sslmode=require"),
    ("redis://:s3cr3t@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://default:s3cr3t@cache:6380/1", "rediss://default:***@cache:6380/1"),
    ("redis+socket://bk:s3cr3t@/run/redis.sock", "redis+socket://bk:***@/run/redis.sock"),
    ("redis://:p@ss@cache:6379/0", "redis://:***@cache:6379/0"),  # unescaped @, as urlsplit
    ("postgresql://bob@db/jobs", "postgresql://bob@db/jobs"),
    ("postgresql://postgres:@/postgres?host=/tmp/pg",
     "postgresql://postgres:@/postgres?host=/tmp/pg"),
    ("redis://cache:6379/0", "redis://cache:6379/0"),
    ("postgresql://db/jobs?user=bob&password=s3cr3t", "postgresql://db/jobs?user=bob&password=***"),
    # "/", "?" and "#" unescaped in a password (SQLAlchemy and redis-py accept them)
    ("postgresql://bk:s3cr/et@db/bk", "postgresql://bk:***@db/bk"),
    ("postgresql://bk:a?b#c@db:5432/bk", "postgresql://bk:***@db:5432/bk"),
    # Celery's failover list: every URL of it
    ("redis://:pw1x@h1:6379/0;redis://:pw2x@h2:6379/0",
     "redis://:***@h1:6379/0;redis://:***@h2:6379/0"),
    # a libpq DSN with a quoted password, and a path with an @ that is no login
    ("dbname=jobs password='se cret' host=db", "dbname=jobs password=*** host=db"),
    ("https://example.com/people/bob@example.com", "https://example.com/people/bob@example.com"),
])
def test_mask_url_hides_the_password_only(url, shown):
    assert mask_url(url) == shown


def test_mask_text_masks_every_url_dsn_password_and_given_secret():
    line = ("retrying redis://:a1@r1:6379/0 and postgresql://u:b2@h/d; dsn host=h password=c3 "
            "dbname=d; smtp login with mail-secret failed")
    shown = mask_text(line, ["mail-secret", None, ""])
    assert shown == ("retrying redis://:***@r1:6379/0 and postgresql://u:***@h/d; dsn host=h "
                     "password=*** dbname=d; smtp login with *** failed")
    assert mask_url(None) is None


def test_mask_settings_masks_secret_names_and_url_passwords_deeply():
    settings = {
        "DATABASE_URL": "postgresql://bob:s3cr3t@db/jobs",
        "MAIL_PASSWORD": "hunter22", "SECRET_KEY": "k" * 40, "METRICS_TOKEN": None,
        "MAIL_USERNAME": "mailer", "MAIL_PORT": 587,
        "CELERY": {"broker_url": "redis://:s3cr3t@cache:6379/0",
                   "broker_transport_options": {"sentinel_kwargs": {"password": "s3cr3t"}}},
    }
    shown = mask_settings(settings)
    assert shown == {
        "DATABASE_URL": "postgresql://bob:***@db/jobs",
        "MAIL_PASSWORD": MASK, "SECRET_KEY": MASK, "METRICS_TOKEN": None,
        "MAIL_USERNAME": "mailer", "MAIL_PORT": 587,
        "CELERY": {"broker_url": "redis://:***@cache:6379/0",
                   "broker_transport_options": {"sentinel_kwargs": {"password": MASK}}},
    }
    assert "s3cr3t" not in json.dumps(shown) and "hunter22" not in json.dumps(shown)


def test_secret_values_finds_secret_settings_and_url_passwords_encoded_or_not():
    found = secret_values({"MAIL_PASSWORD": "hunter22", "REDIS_URL": "redis://:p%40ss-word@r/0",
                           "MAIL_SERVER": "smtp.example.com", "PORT": 5000})
    assert set(found) == {"hunter22", "p%40ss-word", "p@ss-word"}


# -- ./run's log -----------------------------------------------------------------------------

def test_the_launcher_masks_what_its_children_print(capsys):
    env = {"DATABASE_URL": f"postgresql://bob:{PASSWORD}@db/jobs",
           "REDIS_URL": "redis://:p%40ss-word@cache:6379/0",
           "MAIL_PASSWORD": MAIL_PASSWORD, "SECRET_KEY": SECRET_KEY,
           "METRICS_TOKEN": METRICS_TOKEN, "HOME": "/home/someone"}
    printed = [
        f"could not connect to postgresql://bob:{PASSWORD}@db/jobs",
        "broker redis://:p%40ss-word@cache:6379/0 refused AUTH for p@ss-word",
        f"smtp: 535 authentication failed for {MAIL_PASSWORD}",
        f"debug: SECRET_KEY={SECRET_KEY} token {METRICS_TOKEN}",
        "an ordinary line in /home/someone",
    ]
    stream = io.BytesIO("\n".join(printed).encode() + b"\n")
    launcher._relay("web", stream, launcher._secrets(env))
    out = capsys.readouterr().out
    assert_no_secret(out, "the launcher's output", SECRETS + ("p@ss-word", "p%40ss-word"))
    lines = out.splitlines()
    assert lines[0] == "web    | could not connect to postgresql://bob:***@db/jobs"
    assert lines[-1] == "web    | an ordinary line in /home/someone"  # other env values kept


# -- pages, the API and the CLI of an app whose settings hold passwords ------------------------

@pytest.fixture
def masked_app(app, services, smtp):
    """An app with a password in its database URL (the embedded PostgreSQL trusts local
    connections and ignores it), a password in the URL of a broker that is down, a mail
    password, a secret key and a metrics token."""
    database_url, db_password = with_credentials(services.database_url, "postgres", PASSWORD)
    made = create_app(test_settings(
        services, DATABASE_URL=database_url,
        REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{_free_port()}/0",
        MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp.port, MAIL_USERNAME="mailer",
        MAIL_PASSWORD=MAIL_PASSWORD, SECRET_KEY=SECRET_KEY, METRICS_TOKEN=METRICS_TOKEN))
    made.config["TEST_SECRETS"] = SECRETS + (db_password,)
    yield made
    app.extensions["celery"].set_default()  # create_app made the new Celery app the default


def _api_get_paths(app, run_id: int) -> list[str]:
    paths = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1") and "GET" in rule.methods:
            paths.append(re.sub(r"<[^>]+>", str(run_id), rule.rule))
    return paths


def test_no_page_api_answer_or_cli_output_shows_a_password(masked_app, services):
    from app.tokens import create_token
    from models import db
    from scheduler import records

    secrets = masked_app.config["TEST_SECRETS"]
    with masked_app.app_context():
        run_id = records.create("t-masked", "demo.noop", [], {}, trigger="web")
        db.session.commit()
    make_user(masked_app, "admin@example.com", "admin")
    client = masked_app.test_client()
    assert sign_in(client, "admin@example.com").status_code == 302

    pages = ["/", "/login", "/admin/", "/admin/runs", f"/admin/runs/{run_id}",
             "/admin/schedules", "/admin/schedules/new", "/admin/emails", "/admin/users",
             "/admin/system", "/admin/no-such-page", "/healthz", "/readyz"]
    for path in pages:
        resp = client.get(path)
        assert resp.status_code < 500 or path == "/readyz", (path, resp.status_code)
        assert_no_secret(resp.get_data(as_text=True), path, secrets)
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert metrics.status_code == 200
    assert_no_secret(metrics.get_data(as_text=True).replace(METRICS_TOKEN, ""), "/metrics",
                     secrets)

    # The admin's System page shows where the service connects, passwords masked.
    system = client.get("/admin/system").get_data(as_text=True)
    assert ":***@127.0.0.1:" in system  # the broker URL
    assert "MAIL_PASSWORD" in system and "SECRET_KEY" in system and "mailer" in system
    assert "did not answer" in system  # the broker error, shown without its URL's password

    with masked_app.app_context():
        headers = {"Authorization": f"Bearer {create_token('admin@example.com', 'api')[1]}"}
    api = masked_app.test_client()
    for path in _api_get_paths(masked_app, run_id):
        resp = api.get(path, headers=headers)
        assert resp.status_code < 500 or resp.status_code == 503, (path, resp.status_code)
        assert_no_secret(resp.get_data(as_text=True), path, secrets)
    started = api.post("/api/v1/runs", json={"task": "demo.noop"}, headers=headers)
    assert started.status_code == 503 and started.get_json()["code"] == "broker_unavailable"
    assert_no_secret(started.get_data(as_text=True), "POST /api/v1/runs", secrets)

    runner = masked_app.test_cli_runner()
    for args in (["jobs", "list"], ["jobs", "show", str(run_id)], ["jobs", "run", "demo.noop"],
                 ["schedules", "list"], ["emails", "list"]):
        result = runner.invoke(args=args)
        assert_no_secret(result.output + repr(result.exception), " ".join(args), secrets)


def test_a_sentinel_password_in_the_celery_settings_is_masked_in_its_conf(app, services):
    made = create_app(test_settings(services, CELERY={
        "broker_transport_options": {"sentinel_kwargs": {"password": PASSWORD}},
        "result_backend": f"db+postgresql://bob:{PASSWORD}@db/results"}))
    try:
        conf = made.extensions["celery"].conf
        # What `celery inspect conf` answers (celery.worker.control.conf) and `celery report`.
        assert_no_secret(json.dumps(conf.table(with_defaults=True), default=str),
                         "Celery's conf table")
        assert_no_secret(conf.humanize(with_defaults=True), "Celery's conf text")
    finally:
        made.extensions["celery"].close()
        app.extensions["celery"].set_default()


# -- a real worker: its log and `celery inspect conf` --------------------------------------

def test_celery_inspect_conf_and_the_worker_log_show_no_password(app, services, tmp_path):
    user = "bk_masking"
    broker_url, broker_password = with_credentials(services.redis_url, user, PASSWORD)
    database_url, db_password = with_credentials(services.database_url, "postgres", PASSWORD)
    secrets = SECRETS + (broker_password, db_password)
    redis = services.redis()
    if broker_password == PASSWORD:  # our own Redis: a user with that password
        redis.execute_command("ACL", "SETUSER", user, "on", f">{PASSWORD}", "~*", "&*",
                              "+@all")
    proc = CeleryProcess(services, tmp_path / "worker.log", name="masking",
                         queues="masking-only")
    proc.env.update(REDIS_URL=broker_url, DATABASE_URL=database_url,
                    MAIL_PASSWORD=MAIL_PASSWORD, SECRET_KEY=SECRET_KEY,
                    METRICS_TOKEN=METRICS_TOKEN)
    try:
        proc.start(app.extensions["celery"])
        if broker_password == PASSWORD:
            clients = redis.execute_command("CLIENT", "LIST")
            assert f"user={user}".encode() in clients  # the worker did log in as that user
        inspect = subprocess.run(
            [str(BIN / "celery"), "-A", "worker", "inspect", "conf", "--json",
             "--destination", proc.nodename(), "--timeout", "10"],
            cwd=PROJECT, env=proc.env, capture_output=True, text=True, timeout=120)
        assert inspect.returncode == 0, inspect.stderr[-2000:]
        assert_no_secret(inspect.stdout + inspect.stderr, "celery inspect conf", secrets)
        conf = json.loads(inspect.stdout)[proc.nodename()]
        assert conf["broker_url"].startswith("redis")  # shown, its password masked
        assert "**" in conf["broker_url"]
    finally:
        proc.stop()
        if broker_password == PASSWORD:
            redis.execute_command("ACL", "DELUSER", user)
    assert_no_secret(proc.log_path.read_text(errors="replace"), "the worker's log", secrets)
