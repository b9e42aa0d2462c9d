"""Cancels queries with psycopg 3's Connection.cancel_safe() and reports
which the server honoured.

Usage: python3 cancel_safe.py DSN N

With libpq 17 or later (psycopg's binary wheel bundles it), cancel_safe()
uses PQcancelCreate, which sends the CancelRequest on a new connection
encrypted as the session is (sslmode). Each run opens a connection, asks
which server it is on, runs `select pg_sleep(10)` and cancels it after
300 ms from another thread: honoured at once, or only after 10 s when the
cancel went to the wrong server. Prints one line of JSON:

    {"libpq": 170005, "runs": [{"port": 5433, "ms": 305, "error": "canceling statement due to user request"}]}
"""

import json
import sys
import threading
import time

import psycopg


def once(dsn):
    with psycopg.connect(dsn) as conn:
        port = conn.execute("select inet_server_port()").fetchone()[0]
        timer = threading.Timer(0.3, conn.cancel_safe)
        timer.start()
        start = time.monotonic()
        error = ""
        try:
            conn.execute("select pg_sleep(10)")
        except psycopg.errors.QueryCanceled as e:
            error = str(e).strip()
        except Exception as e:  # reported, not raised: the test judges
            error = f"{type(e).__name__}: {e}".strip()
        timer.join()
        return {"port": port, "ms": int((time.monotonic() - start) * 1000), "error": error}


def main():
    dsn, n = sys.argv[1], int(sys.argv[2])
    runs = [once(dsn) for _ in range(n)]
    print(json.dumps({"libpq": psycopg.pq.version(), "runs": runs}))


if __name__ == "__main__":
    main()
