"""Flight SQL clients against `strata flight` (driven by tests/flight.rs).

Usage: flight_clients.py GRPC_URI TOKEN EXPECTED_JSON BUCKET_DIR

Every answer is compared with EXPECTED_JSON, which the Rust test computed from the data it wrote;
DuckDB and Polars read the bucket's Parquet files directly and must agree with Flight SQL.
"""
import datetime as dt
import json
import math
import os
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from duckdb_bucket import whole_bucket_sql  # noqa: E402  (the documented whole-bucket query)

uri, token, expected_path, bucket = sys.argv[1:5]
want = json.load(open(expected_path))
cut = dt.datetime.fromtimestamp(want["cut_ms"] / 1000, tz=dt.timezone.utc)
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


AUTH = {adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}
conn = flightsql.connect(uri, db_kwargs=AUTH)
cur = conn.cursor()

# DBAPI cursor + fetchone.
cur.execute("SELECT count(*) FROM samples")
check(cur.fetchone()[0] == want["total_samples"], "count(*) FROM samples")

# The notebook question, fetch_arrow_table: avg per instance over the last hour (bound cut).
QUESTION = ("SELECT instance, avg(value) AS avg, count(*) AS n FROM node_load1 "
            "WHERE timestamp > ? GROUP BY instance ORDER BY instance")
cur.execute(QUESTION, parameters=(cut,))
t = cur.fetch_arrow_table()
got = {r["instance"]: (r["avg"], r["n"]) for r in t.to_pylist()}
exp = want["node_load1_after_cut"]
check(set(got) == set(exp), f"instances {sorted(got)} vs {sorted(exp)}")
for k, e in exp.items():
    g = got.get(k, (float("nan"), -1))
    check(g[1] == e["count"] and close(g[0], e["avg"]), f"{k}: {g} vs {e}")
flight_answer = got

# pandas: one series, whole.
cur.execute("SELECT timestamp, value FROM node_load1 WHERE instance = 'host-05:9100' ORDER BY timestamp")
df = cur.fetch_df()
h = want["host05"]
check(len(df) == h["count"], f"host05 rows {len(df)} vs {h['count']}")
check(close(float(df["value"].sum()), h["sum"]), "host05 sum")
check(int(df["timestamp"].iloc[0].timestamp() * 1000) == h["first_ms"], "host05 first timestamp")
check(str(df["timestamp"].dtype).startswith("datetime64[ms, UTC]"), f"timestamp dtype {df['timestamp'].dtype}")

# Parameterised query with `$1` and a string parameter; labels map; series table.
cur.execute("SELECT count(*) FROM up WHERE job = $1 AND value = 0", parameters=("db",))
check(cur.fetchone()[0] == want["up_zero_db"], "up == 0 for job db")
cur.execute("SELECT count(*) FROM series WHERE labels['zone'] = 'eu'")
check(cur.fetchone()[0] == want["zone_series"], "series with a zone")
cur.execute("SELECT count(*) FROM series")
check(cur.fetchone()[0] == want["series"], "series rows")

# GetObjects / table listing / table schema / info.
objs = conn.adbc_get_objects(depth="all").read_all().to_pylist()
tables = {}
for c in objs:
    for s in c["catalog_db_schemas"]:
        for tb in s["db_schema_tables"]:
            tables[(c["catalog_name"], s["db_schema_name"], tb["table_name"])] = [col["column_name"] for col in tb["table_columns"]]
check(tables.get(("strata", "public", "node_load1")) == ["instance", "job", "timestamp", "value"], f"node_load1 columns {tables.get(('strata', 'public', 'node_load1'))}")
check(tables.get(("strata", "public", "up")) == ["instance", "job", "zone", "timestamp", "value"], "up columns")
check(tables.get(("strata", "public", "samples")) == ["metric", "labels", "timestamp", "value"], "samples columns")
check(str(conn.adbc_get_table_schema("node_load1").field("timestamp").type) == "timestamp[ms, tz=UTC]", "table schema")
check("TABLE" in conn.adbc_get_table_types(), "table types")
info = conn.adbc_get_info()
check(info.get("vendor_name") == "Strata", f"info {info}")

# Errors: bad SQL carries the message; forbidden statements fail; the server keeps serving.
try:
    cur.execute("SELEC 1")
    check(False, "bad SQL accepted")
except Exception as e:
    check("SELEC" in str(e), f"bad SQL message: {e}")
FORBIDDEN = [
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "DROP TABLE samples",
    "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'",
    "COPY (SELECT 1) TO '/tmp/strata-copy.csv'",
    "INSERT INTO node_load1 SELECT * FROM node_load1",
    "DELETE FROM node_load1",
    "SET datafusion.execution.batch_size = 1",
    "EXPLAIN COPY (SELECT 1) TO '/tmp/strata-copy.csv'",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('/etc/passwd')",
]
for sql in FORBIDDEN:
    try:
        cur.execute(sql)
        rows = cur.fetchall()
        check(False, f"forbidden statement ran: {sql} -> {rows}")
    except Exception as e:
        print(f"refused: {sql} -> {str(e).splitlines()[0][:160]}")
cur.execute("SELECT 41 + 1")
check(cur.fetchone()[0] == 42, "serving after errors")

# Without the token: UNAUTHENTICATED.
try:
    bad = flightsql.connect(uri)
    c2 = bad.cursor()
    c2.execute("SELECT 1")
    check(False, "query without a token succeeded")
except Exception as e:
    check("nauthenticated" in str(e) or "UNAUTHENTICATED" in str(e), f"no token: {e}")

# Polars through ADBC.
p = pl.read_database(QUESTION.replace("?", "$1"), connection=conn, execute_options={"parameters": (cut,)})
check(p.height == len(exp), f"polars rows {p.height}")
for r in p.iter_rows(named=True):
    check(close(r["avg"], exp[r["instance"]]["avg"]) and r["n"] == exp[r["instance"]]["count"], f"polars {r}")

conn.close()

# pyarrow.flight: Flight SQL commands by hand (protobuf Any), bearer token in the headers.
def pb_string(field, s):
    b = s.encode() if isinstance(s, str) else s
    out = bytearray([field << 3 | 2])
    n = len(b)
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + b


def any_cmd(name, body):
    return pb_string(1, "type.googleapis.com/arrow.flight.protocol.sql." + name) + pb_string(2, body)


client = flight.FlightClient(uri)
opts = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def run(cmd):
    info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd), opts)
    table = client.do_get(info.endpoints[0].ticket, opts).read_all()
    check(table.schema.equals(info.schema), f"announced schema {info.schema} vs streamed {table.schema}")
    return table


t = run(any_cmd("CommandStatementQuery", pb_string(1, "SELECT metric, count(*) AS n FROM samples GROUP BY metric ORDER BY metric")))
check(t.to_pylist() == [{"metric": "node_load1", "n": want["total_samples"] // 2}, {"metric": "up", "n": want["total_samples"] // 2}], f"pyarrow statement {t.to_pylist()}")
t = run(any_cmd("CommandGetCatalogs", b""))
check(t.column("catalog_name").to_pylist() == ["strata"], "catalogs")
t = run(any_cmd("CommandGetDbSchemas", b""))
check("public" in t.column("db_schema_name").to_pylist(), "schemas")
t = run(any_cmd("CommandGetTables", pb_string(3, "node%") + bytes([5 << 3, 1])))  # table_name_filter_pattern, include_schema
check(t.column("table_name").to_pylist() == ["node_load1"], f"tables {t.column('table_name').to_pylist()}")
schema = pa.ipc.read_schema(pa.py_buffer(t.column("table_schema")[0].as_py()))
check(schema.names == ["instance", "job", "timestamp", "value"], f"GetTables schema {schema.names}")
t = run(any_cmd("CommandGetTableTypes", b""))
check(sorted(t.column("table_type").to_pylist()) == ["TABLE", "VIEW"], "table types")
t = run(any_cmd("CommandGetSqlInfo", b""))
check(t.num_rows > 5, "sql info")
t = run(any_cmd("CommandGetXdbcTypeInfo", b""))
check("DOUBLE" in t.column("type_name").to_pylist(), "xdbc type info")
try:
    client.get_flight_info(flight.FlightDescriptor.for_command(any_cmd("CommandStatementQuery", pb_string(1, "SELECT 1"))))
    check(False, "pyarrow without token succeeded")
except flight.FlightUnauthenticatedError:
    pass

# DuckDB and Polars on the bucket files: the same question, the same answer.
cut_ms = want["cut_ms"]
DUCK = f"""
SELECT instance, avg(value) AS avg, count(*) AS n FROM ({whole_bucket_sql(bucket)})
WHERE __name__ = 'node_load1' AND timestamp > {cut_ms}
GROUP BY 1 ORDER BY 1
"""
duck = {r[0]: (r[1], r[2]) for r in duckdb.sql(DUCK).fetchall()}
series = pl.scan_parquet(f"{bucket}/*/series.parquet", include_file_paths="f").with_columns(
    pl.col("f").str.extract(r"([0-9A-Z]{26})/series\.parquet$").alias("block"))
samples = pl.scan_parquet(f"{bucket}/*/samples.parquet", include_file_paths="f").with_columns(
    pl.col("f").str.extract(r"([0-9A-Z]{26})/samples\.parquet$").alias("block"),
    pl.coalesce(pl.col("value"), pl.col("value_int") / pl.col("value_scale")).alias("value"))
polars_ans = (samples.filter(pl.col("timestamp") > cut_ms)
              .join(series.filter(pl.col("__name__") == "node_load1").select("block", "series_id", "instance"),
                    on=["block", "series_id"])
              .group_by("instance").agg(pl.col("value").mean().alias("avg"), pl.len().alias("n"))
              .collect())
polars_ans = {r["instance"]: (r["avg"], r["n"]) for r in polars_ans.iter_rows(named=True)}
for k, (a, n) in flight_answer.items():
    d, pn = duck.get(k), polars_ans.get(k)
    check(d is not None and d[1] == n and close(d[0], a), f"duckdb {k}: {d} vs flight {(a, n)}")
    check(pn is not None and pn[1] == n and close(pn[0], a), f"polars {k}: {pn} vs flight {(a, n)}")
check(len(duck) == len(flight_answer) == len(polars_ans), "same instances in DuckDB, Polars and Flight SQL")

if failures:
    print(f"flight_clients: {len(failures)} check(s) failed")
    sys.exit(1)
print("flight_clients: all checks passed")
