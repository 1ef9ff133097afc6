"""Timing harness of `bench sql`: the same questions through Strata's Flight SQL server (ADBC
Flight SQL client, results fetched as Arrow) and through DuckDB on the bucket's Parquet files.

Usage: sql_bench.py GRPC_URI BUCKET_DIR END_MS RUNS
"""
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql
import duckdb

uri, bucket, end_ms, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
hour_ago = end_ms - 3_600_000

FLIGHT = {
    "aggregate": "SELECT instance, date_bin(interval '5 minutes', timestamp) AS t, avg(value) AS v "
                 "FROM node_cpu GROUP BY 1, 2",
    "filter": "SELECT cpu, timestamp, value FROM node_cpu WHERE instance = 'host-00042'",
    "top-N": "SELECT instance, max(value) AS v FROM node_cpu GROUP BY instance ORDER BY v DESC, instance LIMIT 10",
    "stream": f"SELECT instance, cpu, timestamp, value FROM node_cpu WHERE timestamp > to_timestamp_millis({hour_ago})",
}
# DuckDB on the files: the whole-bucket join of docs/format.md §8 (v2 blocks), as a view.
duck = duckdb.connect()
duck.sql(f"""
CREATE VIEW node_cpu AS
WITH samples AS (
  SELECT regexp_extract(filename, '([0-9A-Z]{{26}})/samples\\.parquet$', 1) AS block, series_id, timestamp,
         coalesce(value, value_int / value_scale) AS value
  FROM read_parquet('{bucket}/*/samples.parquet', filename = true, union_by_name = true)
),
series AS (
  SELECT regexp_extract(filename, '([0-9A-Z]{{26}})/series\\.parquet$', 1) AS block, series_id, instance, cpu
  FROM read_parquet('{bucket}/*/series.parquet', filename = true, union_by_name = true)
  WHERE __name__ = 'node_cpu'
)
SELECT instance, cpu, timestamp, value FROM samples JOIN series USING (block, series_id)
""")
DUCK = {
    "aggregate": "SELECT instance, time_bucket(interval '5 minutes', to_timestamp(timestamp / 1000)) AS t, "
                 "avg(value) AS v FROM node_cpu GROUP BY 1, 2",
    "filter": "SELECT cpu, timestamp, value FROM node_cpu WHERE instance = 'host-00042'",
    "top-N": "SELECT instance, max(value) AS v FROM node_cpu GROUP BY instance ORDER BY v DESC, instance LIMIT 10",
    "stream": f"SELECT instance, cpu, timestamp, value FROM node_cpu WHERE timestamp > {hour_ago}",
}

conn = flightsql.connect(uri)
cur = conn.cursor()


def best(fn):
    times, rows = [], None
    for _ in range(runs):
        t = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - t)
    return min(times), rows


def flight_q(q):
    cur.execute(q)
    return cur.fetch_arrow_table().num_rows


def duck_q(q):
    return duck.sql(q).to_arrow_table().num_rows


print(f"{'question':<10} {'flight s':>10} {'duckdb s':>10} {'ratio':>7} {'rows':>10} {'flight rows/s':>14}")
bad = 0
for name in FLIGHT:
    fs, fr = best(lambda: flight_q(FLIGHT[name]))
    ds, dr = best(lambda: duck_q(DUCK[name]))
    if fr != dr:
        print(f"{name}: row counts differ: flight {fr}, duckdb {dr}")
        bad += 1
    print(f"{name:<10} {fs:>10.3f} {ds:>10.3f} {fs / ds:>6.2f}x {fr:>10} {fr / fs:>14,.0f}")
sys.exit(1 if bad else 0)
