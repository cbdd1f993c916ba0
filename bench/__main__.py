"""`python -m bench [NAMES...] [--quick]`: run the benchmarks, then print one line per goal.

Exits 0 when every benchmark ran, even if a goal is short; 1 when one failed; 130 on Ctrl-C
or SIGTERM. Every process started is stopped on the way out.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback

from bench import beat, history, mail, soak, throughput
from bench.harness import Harness, say

#: Every benchmark, in the order a full run takes them.
BENCHMARKS = {**beat.BENCHMARKS, **mail.BENCHMARKS, **history.BENCHMARKS,
              **throughput.BENCHMARKS, **soak.BENCHMARKS}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Timing benchmarks of the database beat scheduler and the e-mail outbox.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and shorter runs, for a smoke run")
    soak.add_arguments(parser)
    args = parser.parse_args(argv)
    soak.configure(args, parser.error)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return args


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    names = args.names or list(BENCHMARKS)
    # Explicitly, so that Ctrl-C also stops a run started in the background (where SIGINT
    # starts out ignored), and SIGTERM / SIGHUP clean up the same way.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    failed = []
    began = time.monotonic()
    try:
        with Harness(quick=args.quick) as h:
            for name in names:
                say(f"== {name}{' (quick)' if args.quick else ''}")
                try:
                    BENCHMARKS[name](h)
                except Exception:
                    failed.append(name)
                    traceback.print_exc()
                    try:  # leave a clean slate for the next benchmark
                        h.wait_idle(timeout=60)
                        h.truncate()
                    except Exception:
                        traceback.print_exc()
            goals = h.goals.lines()
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    say(f"== done in {time.monotonic() - began:.0f} s")
    for line in goals:
        say(line)
    if failed:
        say(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
