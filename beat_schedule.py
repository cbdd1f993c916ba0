"""The schedules defined in code, as plain data; beat syncs them into the schedules table by
name when it starts. Code owns each definition; `enabled` is only the initial value: after
that, enabling and disabling is the operator's and survives restarts.

Keys: name, task, and one of every ("10s", "5m"), cron ("0 2 * * *", with tz) or at (ISO
time); optional args, kwargs, queue, start_at, end_at, overlap ("allow"/"skip"),
misfire ("run_once"/"skip"), misfire_grace_s, enabled.
"""

SCHEDULES = [
    {
        # A heartbeat run every minute: shows the whole path (beat, broker, worker, records)
        # works. Off by default, where it would only make noise.
        "name": "heartbeat",
        "task": "demo.noop",
        "every": "1m",
        "kwargs": {"heartbeat": True},
        "overlap": "skip",
        "enabled": False,
    },
    {
        # Runs whose worker died (even by kill -9) become `lost` instead of running for ever,
        # and queued runs whose message was lost (Redis restarted empty) are published again.
        # Overlap allowed: a sweep whose own message was lost must not block the next ones
        # (each pass is idempotent and the recovery takes its own lock).
        "name": "lost-run-sweep",
        "task": "runs.sweep",
        "every": "1m",
        "overlap": "allow",
    },
    {
        # E-mails left in `sending` by a worker that died are flagged for review, not resent.
        "name": "mail-sweep",
        "task": "mail.sweep",
        "every": "1m",
        "overlap": "allow",
    },
    {
        # Forget beat processes that have not ticked for a day.
        "name": "prune-beat-heartbeats",
        "task": "beat.prune_heartbeats",
        "cron": "17 3 * * *",
        "tz": "UTC",
        "overlap": "skip",
    },
    {
        # Bounded history: roll up yesterday, then delete finished runs older than
        # RUN_RETENTION_DAYS, keeping each task's last failure and each schedule's last 100.
        "name": "prune-runs",
        "task": "runs.prune",
        "cron": "27 3 * * *",
        "tz": "UTC",
        "overlap": "skip",
    },
]
