"""Faults with real processes: the beat leader killed with kill -9, and the SMTP
server down for two minutes. After each: every run ends in a final state, no slot fired twice
and none lost beyond the misfire policy, every e-mail delivered exactly once."""
from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, text

from models import BeatHeartbeat, Email, JobRun, Schedule, db
from models.states import FINAL_STATES
from scheduler.beat import schedules
from scheduler.mail import outbox
from scheduler.enqueue import enqueue
from scheduler.beat.slots import count_between
from tests.helpers import CeleryProcess, SmtpSink, wait_for

_FINAL = tuple(s.value for s in FINAL_STATES)
#: Longest acceptable takeover after kill -9 (standby ticks every second; a killed process's
#: connection is closed by the kernel, so PostgreSQL frees the lock at once).
TAKEOVER_LIMIT_S = 10.0
#: The SMTP outage of the issue: two minutes.
OUTAGE_S = 120.0
#: The private worker's queue for e-mail runs (MAIL_QUEUE), so the session worker sends none.
OUTAGE_QUEUE = "mail-outage"


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, timezone.utc)


def _schedule_runs(app, name: str) -> tuple[Schedule, list[JobRun]]:
    with app.app_context():
        schedule = db.session.scalar(select(Schedule).where(Schedule.name == name))
        rows = list(db.session.scalars(select(JobRun).where(JobRun.schedule_id == schedule.id)
                                       .order_by(JobRun.scheduled_for)))
        for row in rows:
            row.events  # the timeline, loaded before the session closes
        db.session.expunge_all()
        return schedule, rows


def _runs_by_task_id(app, task_ids: list[str]) -> list[JobRun]:
    with app.app_context():
        rows = list(db.session.scalars(select(JobRun).where(JobRun.task_id.in_(task_ids))))
        for row in rows:
            row.events
        db.session.expunge_all()
        return rows


def _emails(app, ids: list[int]) -> list[Email]:
    with app.app_context():
        rows = list(db.session.scalars(select(Email).where(Email.id.in_(ids)).order_by(Email.id)))
        db.session.expunge_all()
        return rows


def _unfinished_runs(app) -> list[tuple[int, str, str]]:
    with app.app_context():
        return db.session.execute(text(
            "SELECT id, task_name, state FROM job_runs WHERE state <> ALL(:final)"
        ), {"final": list(_FINAL)}).all()


def _deliveries(sink: SmtpSink) -> Counter:
    """(Message-ID, recipient) -> how many times the sink received that message for them."""
    with sink.lock:
        messages = list(sink.messages)
    return Counter((str(m["Message-ID"]), a.addr_spec) for m in messages
                   for a in m["To"].addresses)


def _message_id(email_id: int) -> str:
    return f"<beatkeeper.email.{email_id}@localhost>"


def _slots_skipped(run: JobRun) -> int:
    """Slots a skipped row stands for: "missed N slots between ..." or one (overlap)."""
    words = run.skip_reason.split()
    return int(words[1]) if words[0] == "missed" else 1


def _assert_each_slot_once(schedule: Schedule, rows: list[JobRun]) -> int:
    """No slot twice, and every slot from the first to the last either ran once or is
    counted in a `skipped` row (the misfire policy); return how many ran."""
    slots = [r.scheduled_for for r in rows]
    assert len(slots) == len(set(slots)), f"{schedule.name}: a slot fired twice"
    ran = [r for r in rows if r.state != "skipped"]
    for run in ran:
        states = [e.state for e in run.events]
        assert run.state == "succeeded", (schedule.name, run.scheduled_for, states)
        # Released at most once (a leader killed between publish and commit would leave the
        # row `scheduled`, and the next leader re-publish it with the same task_id), and run
        # exactly once in any case.
        assert run.attempts == 1 and states.count("running") == 1, (schedule.name, states)
        assert states.count("queued") <= 1, (schedule.name, states)
    missed = sum(_slots_skipped(r) for r in rows if r.state == "skipped")
    expected = count_between(schedules.timing_of(schedule),
                             slots[0] - timedelta(microseconds=1), slots[-1])
    assert len(ran) + missed == expected, f"{schedule.name}: a slot was lost"
    return len(ran)


def test_beat_leader_killed_standby_takes_over_nothing_fired_twice_or_lost(
        app, worker, beats, smtp):
    with app.app_context():
        schedules.create("every-second", {"task": "demo.noop", "every": "1s"})
        schedules.create("every-second-skip", {"task": "demo.noop", "every": "1s",
                                               "misfire": "skip", "misfire_grace_s": "0.5s"})
        schedules.create("every-minute", {"task": "demo.noop", "cron": "* * * * *",
                                          "tz": "Asia/Kolkata"})
    first, second = beats.start(), beats.start()

    def leader_pid() -> int | None:
        with app.app_context():
            fresh = datetime.now(timezone.utc) - timedelta(seconds=3)
            return db.session.scalar(select(BeatHeartbeat.pid).where(
                BeatHeartbeat.role == "leader", BeatHeartbeat.last_tick_at > fresh))

    pid = wait_for(leader_pid, timeout=60, message="a leader")
    wait_for(lambda: len(_schedule_runs(app, "every-second")[1]) >= 3, timeout=30,
             message="the every-second stream")
    victim, survivor = (first, second) if pid == first.proc.pid else (second, first)

    # Kill the leader half a second before a minute boundary: the cron slot, countdown runs
    # and delayed e-mails all fall due during the takeover.
    boundary = (int(time.time()) // 60 + 1) * 60
    if boundary - time.time() < 4:  # time to write the runs and e-mails due around it
        boundary += 60
    kill_at = boundary - 0.5
    offsets_s = [-2.0, -1.0, -0.5, -0.2, 0.0, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0]
    with app.app_context():
        countdowns = [enqueue("demo.noop", [f"due {o:+.1f} s"], trigger="web",
                              eta=_utc(kill_at + o)) for o in offsets_s]
        email_ids = [outbox.send_email(f"takeover{i}@example.com", f"Takeover {i}", "hello",
                                       send_at=_utc(kill_at + o)).id
                     for i, o in enumerate(offsets_s[::2])]
        db.session.commit()

    time.sleep(max(0.0, kill_at - time.time()))
    assert victim.proc.poll() is None and survivor.proc.poll() is None
    killed_at = datetime.now(timezone.utc)
    victim.kill(signal.SIGKILL)

    def survivor_leads() -> datetime | None:
        with app.app_context():
            return db.session.scalar(select(BeatHeartbeat.last_tick_at).where(
                BeatHeartbeat.pid == survivor.proc.pid, BeatHeartbeat.role == "leader",
                BeatHeartbeat.last_tick_at > killed_at))

    took_over = wait_for(survivor_leads, timeout=TAKEOVER_LIMIT_S, interval=0.02,
                         message="the standby to take over")
    takeover_s = (took_over - killed_at).total_seconds()
    print(f"\nbeat takeover after kill -9 of the leader: {takeover_s:.3f} s "
          f"(first leading tick of the standby)")

    wait_for(lambda: time.time() > boundary + 5, timeout=70, message="the stream to go on")
    wait_for(lambda: all(r.state in _FINAL for r in _runs_by_task_id(app, countdowns)),
             timeout=30, message="every countdown run to finish")
    wait_for(lambda: all(e.state == "sent" for e in _emails(app, email_ids)), timeout=30,
             message="every delayed e-mail to be sent")
    survivor.stop()
    wait_for(lambda: not _unfinished_runs(app), timeout=30, interval=0.3,
             message="every run to reach a final state")

    # Per schedule: no slot twice, no slot lost beyond the misfire policy.
    ran = {}
    with app.app_context():
        names = list(db.session.scalars(select(Schedule.name).where(Schedule.enabled)))
    for name in names:
        schedule, rows = _schedule_runs(app, name)
        if rows:
            ran[name] = _assert_each_slot_once(schedule, rows)
            print(f"{name}: {ran[name]} ran, {len(rows) - ran[name]} skipped row(s): "
                  f"{[r.skip_reason for r in rows if r.state == 'skipped']}")
    assert ran["every-second"] >= 10
    # The cron slot due during the takeover fired once (run_once, within the 60 s grace).
    _, minute_runs = _schedule_runs(app, "every-minute")
    assert _utc(boundary) in [r.scheduled_for for r in minute_runs if r.state == "succeeded"]
    # Skips of the `skip` policy say why.
    _, skip_rows = _schedule_runs(app, "every-second-skip")
    assert all("misfire policy" in r.skip_reason for r in skip_rows if r.state == "skipped")

    # Every countdown run released once, on time or later, and run once.
    for run in _runs_by_task_id(app, countdowns):
        states = [e.state for e in run.events]
        assert run.state == "succeeded" and run.attempts == 1, states
        assert states.count("running") == 1 and states.count("queued") <= 1, states
        assert run.started_at >= run.eta

    # Every e-mail delivered exactly once, never early.
    time.sleep(1.0)  # a second copy would have arrived by now
    received = _deliveries(smtp)
    for email in _emails(app, email_ids):
        assert email.state == "sent" and email.attempts == 1
        assert email.sent_at >= email.send_at
        assert received[(_message_id(email.id), email.recipients[0])] == 1
    assert takeover_s < TAKEOVER_LIMIT_S


def test_smtp_down_for_two_minutes_every_email_delivered_once(
        app, worker, beats, services, tmp_path, monkeypatch):
    # A server of our own, its port closed (connection refused) until the outage ends, and a
    # private worker for its queue, with a short backoff: ~60 attempts per e-mail in 2 min,
    # far beyond the 8 (or the tests' 40) attempts after which mail used to be given up.
    sink = SmtpSink()
    mailer = CeleryProcess(services, tmp_path / "mailer.log", name="mailer", smtp=sink,
                           queues=OUTAGE_QUEUE)
    mailer.env.update(MAIL_RETRY_BASE_S="0.5", MAIL_RETRY_MAX_S="2.0")
    mailer.start(app.extensions["celery"])
    monkeypatch.setitem(app.config, "MAIL_QUEUE", OUTAGE_QUEUE)
    beats.start()  # releases the delayed e-mails when due
    try:
        down_at = time.monotonic()
        with app.app_context():
            immediate = [outbox.send_email(f"down{i}@example.com", f"Outage {i}", "hello").id
                         for i in range(4)]
            immediate.append(outbox.send_email(["pair1@example.com", "pair2@example.com"],
                                               "Outage pair", "hello").id)
            delayed = [outbox.send_email(f"delayed{s}@example.com", f"Delayed {s}", "hello",
                                         countdown=s).id for s in (5, 30, 60, 90, 110)]
            # Due two days ago (the beat was down, say): past MAIL_GIVE_UP_AFTER_S (one day),
            # so the first refused connection fails it, visibly, instead of retrying for ever.
            stale = outbox.send_email("stale@example.com", "Stale", "hello",
                                      send_at=datetime.now(timezone.utc) - timedelta(days=2)).id
            db.session.commit()
        ids = immediate + delayed

        wait_for(lambda: min(e.attempts for e in _emails(app, immediate)) >= 5, timeout=30,
                 message="retries while SMTP is down")
        [gave_up] = _emails(app, [stale])
        assert gave_up.state == "failed" and gave_up.attempts == 1
        assert "gave up" in gave_up.last_error and "Connection refused" in gave_up.last_error

        time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        during = _emails(app, ids)
        assert all(e.state in ("queued", "sending") for e in during), \
            [(e.id, e.state, e.last_error) for e in during]
        assert all(e.attempts >= 2 for e in during)
        sink.start()  # the server is back, on the same port
        up_at = time.monotonic()
        wait_for(lambda: all(e.state == "sent" for e in _emails(app, ids)), timeout=30,
                 message="every e-mail to be sent after the outage")
        print(f"\nSMTP outage {up_at - down_at:.0f} s; all mail out "
              f"{time.monotonic() - up_at:.1f} s after the server came back")
        time.sleep(2.5)  # longer than the largest backoff: a second copy would be here
    finally:
        sink.stop()
        mailer.stop()
    beats[0].stop()
    wait_for(lambda: not _unfinished_runs(app), timeout=30, interval=0.3,
             message="every run to reach a final state")

    received = _deliveries(sink)
    expected = {(_message_id(e.id), r) for e in _emails(app, ids) for r in e.recipients}
    assert set(received) == expected, "a message was lost, or one nobody sent arrived"
    assert set(received.values()) == {1}, "a message was delivered twice"

    with app.app_context():
        runs = {r.id: r for r in db.session.scalars(select(JobRun).where(
            JobRun.id.in_([e.run_id for e in _emails(app, ids)])))}
        for run in runs.values():
            run.events
        db.session.expunge_all()
    for email in _emails(app, ids):
        assert email.state == "sent" and not email.needs_review and email.last_error is None
        assert email.sent_at >= email.send_at
        run = runs[email.run_id]
        states = [e.state for e in run.events]
        assert run.state == "succeeded" and run.queue == OUTAGE_QUEUE
        # Every attempt is on the timeline: a `running` per attempt, a `retrying` per refusal.
        assert states.count("running") == email.attempts == run.attempts
        assert states.count("retrying") == email.attempts - 1 >= 1
        assert all("Connection refused" in e.message for e in run.events
                   if e.state == "retrying")
        assert run.worker_host.startswith("mailer@")
    assert min(e.attempts for e in _emails(app, immediate)) >= 30
