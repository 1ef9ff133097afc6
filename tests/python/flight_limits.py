"""`--sql.memory-limit` and `--sql.timeout` against `strata flight` (driven by tests/flight.rs).

Usage: flight_limits.py GRPC_URI memory    (server started with --sql.memory-limit 4MiB)
       flight_limits.py GRPC_URI timeout   (server started with --sql.timeout 2s)
"""
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql

uri, which = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def failure(cur, sql, limit):
    """The error message of `sql`, which must fail by `limit` (empty when it succeeded)."""
    try:
        cur.execute(sql)
        cur.fetchall()
    except Exception as e:
        msg = str(e)
        print(f"{limit}:", msg.splitlines()[0][:200])
        return msg
    check(False, f"statement over the {limit} succeeded")
    return ""


conn = flightsql.connect(uri)
cur = conn.cursor()

if which == "memory":
    # Sorting 5M generated rows needs far more than 4 MiB (no spilling): RESOURCE_EXHAUSTED.
    sql = "SELECT value FROM generate_series(1, 5000000) AS t(value) ORDER BY value DESC"
    msg = failure(cur, sql, "memory limit")
    exhausted = ("RESOURCE_EXHAUSTED", "ResourceExhausted", "Resources exhausted")
    check(any(word in msg for word in exhausted), f"memory error: {msg}")
    check("--sql.memory-limit" in msg, f"memory error names the flag: {msg}")
elif which == "timeout":
    # A long scan ends after about 2 s with DEADLINE_EXCEEDED.
    started = time.monotonic()
    msg = failure(cur, "SELECT count(*) FROM generate_series(1, 100000000000) AS t(v) WHERE v % 7 = 3", "timeout")
    took = time.monotonic() - started
    print(f"timeout after {took:.1f}s")
    check("DEADLINE_EXCEEDED" in msg or "DeadlineExceeded" in msg, f"timeout error: {msg}")
    check("--sql.timeout" in msg, f"timeout error names the flag: {msg}")
    check(took < 30, f"timeout took {took:.1f}s")
else:
    sys.exit(f"unknown limit {which!r}: memory or timeout")

# Still serving, and a normal query fits in the limit.
cur.execute("SELECT count(*) FROM samples")
check(cur.fetchone()[0] > 0, "serving after the limits fired")

if failures:
    print(f"flight_limits: {len(failures)} check(s) failed")
    sys.exit(1)
print("flight_limits: all checks passed")
