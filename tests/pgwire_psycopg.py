"""psycopg 3 against the Hub's Postgres wire endpoint; run by tests/it/pgwire_clients.rs.

Usage: python3 pgwire_psycopg.py '<conninfo>'. Prints one JSON object with what it saw; exits
non-zero on any unexpected error.
"""

import datetime
import json
import sys

import psycopg
from psycopg import errors


def main() -> None:
    out = {}
    with psycopg.connect(sys.argv[1], autocommit=True) as conn:
        out["server_version"] = conn.info.server_version
        with conn.cursor() as cur:
            # server-side parameters (extended protocol) and typed results
            cur.execute(
                "SELECT model, count(*) AS n, sum(cost_usd) AS cost, min(timestamp) AS first "
                "FROM events WHERE model = %s GROUP BY model",
                ("gpt-4o",),
            )
            model, n, cost, first = cur.fetchone()
            out["model"], out["n"], out["cost"] = model, n, cost
            out["first"] = first.isoformat()
            out["first_is_aware"] = first.tzinfo is not None
            out["types"] = [type(v).__name__ for v in (model, n, cost, first)]
            # a timestamptz parameter
            since = datetime.datetime(2026, 11, 20, 0, 30, tzinfo=datetime.timezone.utc)
            cur.execute("SELECT count(*) FROM events WHERE timestamp >= %s", (since,))
            out["since_count"] = cur.fetchone()[0]
            # time_bucket, as a Grafana panel would send it
            cur.execute(
                "SELECT time_bucket('300.000s', timestamp) AS \"time\", count(*) FROM events "
                "GROUP BY 1 ORDER BY 1 LIMIT 2"
            )
            out["buckets"] = [[t.isoformat(), c] for t, c in cur.fetchall()]
            # client-side binding (simple protocol)
        with psycopg.ClientCursor(conn) as cur:
            cur.execute("SELECT count(*) FROM events WHERE model = %s", ("claude-3-5-sonnet",))
            out["client_side_count"] = cur.fetchone()[0]
        # refused statement → InsufficientPrivilege (42501), connection still usable
        try:
            conn.execute("DROP TABLE events")
            out["drop"] = "allowed"
        except errors.InsufficientPrivilege as e:
            out["drop"] = e.sqlstate
        out["after_refusal"] = conn.execute("SELECT 1").fetchone()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
