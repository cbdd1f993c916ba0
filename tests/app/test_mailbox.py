"""The development mailbox: the capture server writes .eml files, the pages read them."""
from __future__ import annotations

import smtplib
import socket
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from app import create_app
from app.mailbox import CaptureHandler
from tests.helpers import make_user, sign_in, test_settings


@pytest.fixture
def capture(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(CaptureHandler(tmp_path), hostname="127.0.0.1", port=port)
    controller.start()
    yield tmp_path, port
    controller.stop()


def test_captured_mail_is_listed_and_shown_escaped(capture, services):
    folder, port = capture
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "app@example.com", "dev@example.com", "<b>Hi</b>"
    msg.set_content("plain <script>alert(1)</script>")
    msg.add_alternative("<p onclick='x()'>html</p>", subtype="html")
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(msg)
    [saved] = list(folder.glob("*.eml"))

    app = create_app(test_settings(services, MAIL_CAPTURE_DIR=str(folder)))
    client = app.test_client()
    assert client.get("/mailbox/").status_code == 302  # sign-in first
    make_user(app, "dev@example.com", "viewer")
    sign_in(client, "dev@example.com")
    page = client.get("/mailbox/").get_data(as_text=True)
    assert "&lt;b&gt;Hi&lt;/b&gt;" in page and "<b>Hi</b>" not in page
    shown = client.get(f"/mailbox/{saved.name}").get_data(as_text=True)
    assert "plain &lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "&lt;p onclick=" in shown and "<p onclick" not in shown
    assert client.get("/mailbox/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/mailbox/1-1.eml").status_code == 404


def test_mailbox_pages_exist_only_with_a_capture_dir(app, client):
    assert client.get("/mailbox/").status_code == 404
