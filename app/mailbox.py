"""The development mailbox: a local SMTP capture server (run by ./run) and pages to read it.

`python -m app.mailbox DIR PORT` accepts every message and writes it to DIR as a .eml file.
The pages at /mailbox are registered only when MAIL_CAPTURE_DIR is set (development).
"""
from __future__ import annotations

import re
import signal
import sys
import threading
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template

# Captured mail is as private as real mail: signed-in users only (app.auth.PRIVATE_BLUEPRINTS).
bp = Blueprint("mailbox", __name__, url_prefix="/mailbox")
_NAME = re.compile(r"^[0-9]+-[0-9]+\.eml$")
#: Messages listed on the page, newest first.
LIST_LIMIT = 200


class CaptureHandler:
    """aiosmtpd handler: every accepted message becomes one file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.lock:
            self.count += 1
            name = f"{time.time_ns()}-{self.count}.eml"
        tmp = self.folder / f".{name}.tmp"
        tmp.write_bytes(envelope.original_content or envelope.content)
        tmp.rename(self.folder / name)  # readers never see half a message
        return "250 Message accepted for delivery"


def serve(folder: str, port: int) -> None:
    """Run the capture server until SIGTERM or SIGINT."""
    from aiosmtpd.controller import Controller

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    controller = Controller(CaptureHandler(path), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"capturing mail on 127.0.0.1:{port} into {path}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


def _read(path: Path) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())


@bp.get("/")
def index() -> str:
    folder = Path(current_app.config["MAIL_CAPTURE_DIR"])
    files = sorted((p for p in folder.glob("*.eml") if _NAME.match(p.name)), reverse=True)
    messages = [(p.name, _read(p)) for p in files[:LIST_LIMIT]]
    return render_template("mailbox.html", messages=messages, total=len(files))


@bp.get("/<name>")
def show(name: str) -> str:
    if not _NAME.match(name):
        abort(404)
    path = Path(current_app.config["MAIL_CAPTURE_DIR"]) / name
    if not path.is_file():
        abort(404)
    message = _read(path)
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return render_template("mailbox_message.html", name=name, message=message,
                           text=text.get_content() if text else "",
                           html=html.get_content() if html else None)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
