"""DuckDB on the bucket's files directly (no Strata process): the whole bucket as one table, per
docs/format.md §8, then the average of a metric per instance over the last hour of data.

    python examples/duckdb_bucket.py --bucket ./data/bucket --metric node_load1

Prints `instance,avg,count` lines, sorted by instance.
"""
import argparse

import duckdb


def whole_bucket_sql(b):
    """The whole bucket of FILESYSTEM directory `b` as one query (docs/format.md §8): every label
    column of series.parquet, `timestamp` (ms) and `value`, complete blocks only."""
    return f"""
WITH blocks AS (
  SELECT regexp_extract(file, '([0-9A-Z]{{26}})/meta\\.json$', 1) AS block FROM glob('{b}/*/meta.json')
  EXCEPT
  SELECT regexp_extract(file, '([0-9A-Z]{{26}})/deletion-mark\\.json$', 1) FROM glob('{b}/*/deletion-mark.json')
),
samples AS (
  SELECT regexp_extract(filename, '([0-9A-Z]{{26}})/samples\\.parquet$', 1) AS block, series_id, timestamp,
         coalesce(value, value_int / value_scale) AS value
  FROM read_parquet('{b}/*/samples.parquet', filename = true, union_by_name = true)
),
series AS (
  SELECT regexp_extract(filename, '([0-9A-Z]{{26}})/series\\.parquet$', 1) AS block, * EXCLUDE (filename)
  FROM read_parquet('{b}/*/series.parquet', filename = true, union_by_name = true)
)
SELECT series.*, samples.timestamp, samples.value
FROM samples JOIN series USING (block, series_id)
WHERE block IN (SELECT block FROM blocks)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bucket", required=True, help="directory of a FILESYSTEM bucket")
    ap.add_argument("--metric", default="node_load1")
    args = ap.parse_args()
    duckdb.sql(f"CREATE VIEW metrics AS {whole_bucket_sql(args.bucket)}")
    rows = duckdb.sql(
        """SELECT instance, avg(value), count(*) FROM metrics
           WHERE __name__ = $metric AND timestamp > (SELECT max(timestamp) FROM metrics) - 3600000
           GROUP BY instance ORDER BY instance""",
        params={"metric": args.metric},
    ).fetchall()
    for instance, avg, n in rows:
        print(f"{instance},{avg!r},{n}")


if __name__ == "__main__":
    main()
