"""Sign-in, roles, the users CLI, and the security of every admin route."""
from __future__ import annotations

import re

from tests.helpers import PASSWORD, csrf_token, make_user, sign_in


def _admin_rules(app):
    return [r for r in app.url_map.iter_rules() if r.rule.startswith("/admin")]


def _fill(rule) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", "1", rule.rule)


def test_every_admin_route_sends_anonymous_users_to_sign_in(app, client, services):
    rules = _admin_rules(app)
    assert rules
    for rule in rules:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = client.open(_fill(rule), method=method)
            assert resp.status_code == 302, (rule.rule, method, resp.status_code)
            assert resp.headers["Location"].startswith("/login"), rule.rule


def test_every_admin_post_is_403_for_a_viewer(app, viewer_client):
    token = csrf_token(viewer_client, "/admin/")
    posts = [r for r in _admin_rules(app) if "POST" in r.methods]
    for rule in posts:
        resp = viewer_client.post(_fill(rule), data={"csrf_token": token})
        assert resp.status_code == 403, (rule.rule, resp.status_code)


def test_a_post_without_csrf_token_is_400(app, operator_client):
    posts = [r for r in _admin_rules(app) if "POST" in r.methods]
    for rule in posts + [type("R", (), {"rule": "/logout"})()]:
        resp = operator_client.post(_fill(rule) if hasattr(rule, "methods") else rule.rule)
        assert resp.status_code == 400, (rule.rule, resp.status_code)


def test_sign_in_and_out(app, client, services):
    make_user(app, "ada@example.com", "viewer")
    assert client.get("/admin/").status_code == 302
    resp = sign_in(client, "ada@example.com", "wrong password!!")
    assert resp.status_code == 401 and "Wrong e-mail or password." in resp.get_data(as_text=True)
    resp = sign_in(client, "ADA@example.com")
    assert resp.status_code == 302 and resp.headers["Location"] == "/admin/"
    page = client.get("/admin/").get_data(as_text=True)
    assert "ada@example.com" in page
    client.post("/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    assert client.get("/admin/").status_code == 302


def test_sign_in_redirects_only_to_this_site(app, client, services):
    make_user(app, "ada@example.com", "viewer")
    token = csrf_token(client, "/login")
    for target, expected in [("/admin/runs", "/admin/runs"), ("//evil.example", "/admin/"),
                             ("https://evil.example/", "/admin/"), ("/\\evil.example", "/admin/")]:
        client.post("/logout", data={"csrf_token": token})
        token = csrf_token(client, "/login")
        resp = client.post(f"/login?next={target}", data={
            "email": "ada@example.com", "password": PASSWORD, "csrf_token": token})
        assert resp.headers["Location"] == expected, target
        token = csrf_token(client, "/admin/")


def test_cookies_and_security_headers(app, client, services):
    make_user(app, "ada@example.com", "viewer")
    resp = sign_in(client, "ada@example.com")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/admin/")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    html = page.get_data(as_text=True)
    assert "<script>" not in html and " style=" not in html and "onclick" not in html


def test_users_cli(app, services):
    runner = app.test_cli_runner()
    out = runner.invoke(args=["users", "create", "ops@example.com", "--role", "operator",
                              "--password", "long enough password"])
    assert out.exit_code == 0 and "created ops@example.com (operator)" in out.output
    out = runner.invoke(args=["users", "create", "ops@example.com", "--password", "x" * 12])
    assert out.exit_code != 0 and "already exists" in out.output
    out = runner.invoke(args=["users", "create", "short@example.com", "--password", "short"])
    assert out.exit_code != 0 and "at least 10 characters" in out.output
    assert "ops@example.com" in runner.invoke(args=["users", "list"]).output


def test_first_admin_is_created_once_with_a_printed_password(app, client, services):
    runner = app.test_cli_runner()
    out = runner.invoke(args=["users", "ensure-admin"])
    password = out.output.strip().rsplit(" ", 1)[1]
    assert out.output.startswith("created the first admin: admin@localhost with password")
    assert runner.invoke(args=["users", "ensure-admin"]).output == ""  # not again
    assert sign_in(client, "admin@localhost", password).status_code == 302
