#!/usr/bin/env python3
"""A "pooled application" client on psycopg 3 and psycopg_pool.

    python3 pooled_psycopg.py --dsn 'host=H port=P user=U password=W dbname=D sslmode=disable' \
        [--pool 8] [--workers N] [--duration 10]

Each of --workers (default: --pool) threads loops: take a connection from a
psycopg_pool.ConnectionPool (default settings, min_size=max_size=--pool),
run BEGIN, `SELECT 1`, `SELECT pg_sleep(0.05)`, COMMIT as separate statements
(`with pool.connection() as conn: with conn.transaction(): ...`), give the
connection back, then sleep a random 50-300 ms. No retries of its own: what
the pool does by default is what is measured.

After --duration seconds (or on SIGTERM/SIGINT) no new transaction starts,
running ones finish, and it prints one line of JSON:

    {"driver":"python-psycopg","committed":N,"errors":{"<Class>: <message>":count},
     "cut_mid_flight":N,"errors_total":N,
     "errors_by_stage":{"acquire":N,"begin":N,"select1":N,"sleep":N,"commit":N}}

An error while taking a connection (acquire) or on BEGIN is a failed start;
an error after BEGIN succeeded counts as cut_mid_flight (an error while giving
back a committed connection, stage "release", counts as neither).
Install: pip install 'psycopg[binary]' psycopg_pool (see install.sh).
"""

import argparse
import json
import random
import signal
import sys
import threading

import psycopg
import psycopg_pool


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.committed = 0
        self.errors = {}
        self.by_stage = {}
        self.cut_mid_flight = 0
        self.errors_total = 0

    def fail(self, stage, exc):
        msg = f"{type(exc).__name__}: {str(exc).strip()}"
        with self.lock:
            self.errors[msg] = self.errors.get(msg, 0) + 1
            self.by_stage[stage] = self.by_stage.get(stage, 0) + 1
            self.errors_total += 1
            if stage not in ("acquire", "begin", "release"):
                self.cut_mid_flight += 1

    def commit(self):
        with self.lock:
            self.committed += 1


def transaction(pool):
    """Run one application transaction; return the stage that failed and the
    exception, or (None, None)."""
    stage = "acquire"
    try:
        with pool.connection() as conn:
            stage = "begin"
            with conn.transaction():  # sends BEGIN
                stage = "select1"
                conn.execute("SELECT 1").fetchone()
                stage = "sleep"
                conn.execute("SELECT pg_sleep(0.05)").fetchone()
                stage = "commit"  # leaving the block sends COMMIT
            stage = "release"
        return None, None
    except Exception as exc:  # noqa: BLE001 - every error is counted
        if stage == "release":  # committed; only giving it back failed
            return "release", exc
        return stage, exc


def worker(pool, stop, tally, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        stage, exc = transaction(pool)
        if exc is None:
            tally.commit()
        elif stage == "release":
            tally.commit()
            tally.fail(stage, exc)
        else:
            tally.fail(stage, exc)
        stop.wait(rng.uniform(0.050, 0.300))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True, help="libpq conninfo string or URL")
    ap.add_argument("--pool", type=int, default=8, help="pool size (min_size=max_size)")
    ap.add_argument("--workers", type=int, default=0, help="concurrent workers (default: --pool)")
    ap.add_argument("--duration", type=float, default=10.0, help="run for this many seconds")
    ap.add_argument(
        "--check",
        action="store_true",
        help="check each connection before handing it out (check=ConnectionPool.check_connection)",
    )
    args = ap.parse_args()
    workers = args.workers or args.pool
    if args.pool <= 0 or workers <= 0 or args.duration <= 0:
        ap.error("--pool, --workers and --duration must be positive")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    tally = Tally()
    # open=True is the default; spelled out because psycopg_pool warns otherwise.
    extra = {"check": psycopg_pool.ConnectionPool.check_connection} if args.check else {}
    pool = psycopg_pool.ConnectionPool(args.dsn, min_size=args.pool, max_size=args.pool, open=True, **extra)
    threads = [
        threading.Thread(target=worker, args=(pool, stop, tally, random.random()), daemon=True)
        for _ in range(workers)
    ]
    for t in threads:
        t.start()
    stop.wait(args.duration)
    stop.set()
    for t in threads:
        t.join()
    pool.close()

    print(
        json.dumps(
            {
                "driver": "python-psycopg",
                "committed": tally.committed,
                "errors": tally.errors,
                "cut_mid_flight": tally.cut_mid_flight,
                "errors_total": tally.errors_total,
                "errors_by_stage": tally.by_stage,
                "versions": {"psycopg": psycopg.__version__, "psycopg_pool": psycopg_pool.__version__},
            },
            separators=(",", ":"),
        ),
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
