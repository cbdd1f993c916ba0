"""The users page: admins only; create users, change roles, never lose the last admin."""
from __future__ import annotations

from sqlalchemy import select

from models import User, db
from tests.helpers import csrf_token, sign_in


def _user(app, email):
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        if user is not None:
            db.session.expunge(user)
        return user


def test_only_admins_see_and_use_the_users_page(app, viewer_client, operator_client):
    for client in (viewer_client, operator_client):
        assert client.get("/admin/users").status_code == 403
        assert "/admin/users" not in client.get("/admin/").get_data(as_text=True)


def test_admin_creates_a_user_who_can_sign_in(app, admin_client):
    assert "/admin/users" in admin_client.get("/admin/").get_data(as_text=True)
    token = csrf_token(admin_client, "/admin/users")
    page = admin_client.post("/admin/users", data={
        "email": "New@Example.com", "role": "operator", "password": "a long password",
        "csrf_token": token}, follow_redirects=True).get_data(as_text=True)
    assert "Created new@example.com (operator)." in page
    client = app.test_client()
    assert sign_in(client, "new@example.com", "a long password").status_code == 302

    page = admin_client.post("/admin/users", data={
        "email": "<script>x</script>@example.com", "role": "viewer", "password": "short",
        "csrf_token": token}, follow_redirects=True).get_data(as_text=True)
    assert "Not created" in page and "<script>x" not in page


def test_roles_change_and_accounts_switch_off(app, admin_client, viewer_client):
    viewer = _user(app, "viewer@example.com")
    token = csrf_token(admin_client, "/admin/users")
    admin_client.post(f"/admin/users/{viewer.id}", data={"role": "operator", "active": "1",
                                                        "csrf_token": token})
    assert _user(app, "viewer@example.com").role == "operator"
    admin_client.post(f"/admin/users/{viewer.id}", data={"role": "operator", "active": "0",
                                                        "csrf_token": token})
    assert _user(app, "viewer@example.com").active is False
    # A switched-off account is signed out on its next request.
    assert viewer_client.get("/admin/").status_code == 302


def test_the_last_admin_cannot_be_demoted_or_switched_off(app, admin_client):
    admin = _user(app, "admin@example.com")
    token = csrf_token(admin_client, "/admin/users")
    for data in ({"role": "viewer", "active": "1"}, {"role": "admin", "active": "0"}):
        page = admin_client.post(f"/admin/users/{admin.id}", data={**data, "csrf_token": token},
                                 follow_redirects=True).get_data(as_text=True)
        assert "this is the last active admin" in page
    assert _user(app, "admin@example.com").role == "admin"
    assert _user(app, "admin@example.com").active is True
