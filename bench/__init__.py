"""Timing benchmarks of the database beat scheduler: `python -m bench [NAMES...] [--quick]`.

A separate program, never part of the test suite: timings are measured and compared with a
baseline measured in the same run (plain Celery doing the same job), never asserted. Each
benchmark prints its figures as it goes; the run ends with one line per goal,
`goal NAME: value (target) ok|short`, and exits 0 even when a goal is short.

Services are those of the tests: embedded PostgreSQL and Redis in a temporary folder, or
BENCH_DATABASE_URL / BENCH_REDIS_URL (whose `public` schema is dropped and recreated), with
real `celery -A worker worker` and `celery -A worker beat` processes.
"""
