"""Reads a Strata bucket with DuckDB, Polars and pyarrow (no Strata code) and checks every sample,
bit for bit, against the expected samples (from `promtool tsdb dump` of the source TSDB blocks).

Usage: read_blocks.py EXPECTED_JSON BUCKET_DIR FORMAT_VERSION

EXPECTED_JSON maps a series key `{__name__="x", a="b"}` to [[timestamp_ms, "<f64 bits as 16 hex digits>"], ...].
Run by tests/format.rs; prints one line per reader and exits non-zero on the first difference.
"""

import glob
import json
import math
import os
import struct
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from duckdb_bucket import whole_bucket_sql  # noqa: E402  (the documented whole-bucket query)

# Columns that are not labels (in the joined rows the readers build; the test data has no label of these names).
FIXED = {
    "series_id", "series_hash", "labels", "min_time", "max_time", "num_samples", "first_row", "block", "filename",
    "timestamp", "value", "value_int", "value_scale",
}


def bucket_sql(bucket, version):
    """The whole-bucket SQL of docs/format.md §8 (examples/duckdb_bucket.py, v2 and mixed buckets); a
    bucket of v1 blocks only has no value_int / value_scale columns, so there value is the column itself."""
    sql = whole_bucket_sql(bucket)
    return sql if version != "1" else sql.replace("coalesce(value, value_int / value_scale)", "value")


def bits(v):
    return struct.unpack("<Q", struct.pack("<d", v))[0]


def key_of(row):
    pairs = {k: v for k, v in row.items() if k not in FIXED and v is not None}
    overflow = row.get("labels")
    if overflow:
        pairs.update(dict(overflow) if not isinstance(overflow, dict) else overflow)
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(pairs.items())) + "}"


def compare(reader, got, expected):
    if set(got) != set(expected):
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        sys.exit(f"{reader}: series differ: missing {missing}, unexpected {extra}")
    n = 0
    for k, want in expected.items():
        have = sorted(got[k])
        if len(have) != len(want):
            sys.exit(f"{reader}: {k} has {len(have)} samples, expected {len(want)}")
        for (t, v), (wt, wbits) in zip(have, want):
            w = int(wbits, 16)
            wf = struct.unpack("<d", struct.pack("<Q", w))[0]
            if t != wt:
                sys.exit(f"{reader}: {k}: timestamp {t}, expected {wt}")
            # promtool prints every NaN as NaN: NaN payloads (stale markers) are compared as NaN.
            if not (bits(v) == w or (math.isnan(v) and math.isnan(wf))):
                sys.exit(f"{reader}: {k} at {t}: value {v!r} ({bits(v):016x}), expected {wf!r} ({w:016x})")
            n += 1
    return n


def complete_blocks(bucket):
    out = []
    for d in sorted(glob.glob(os.path.join(bucket, "*", "meta.json"))):
        block = os.path.dirname(d)
        if not os.path.exists(os.path.join(block, "deletion-mark.json")):
            out.append(block)
    return out


def main():
    expected_path, bucket, version = sys.argv[1], sys.argv[2], sys.argv[3]
    expected = json.load(open(expected_path))
    blocks = complete_blocks(bucket)
    for b in blocks:
        meta = json.load(open(os.path.join(b, "meta.json")))
        if str(meta["strata"]["format_version"]) != version:
            sys.exit(f"{b}: meta.json format_version {meta['strata']['format_version']}, expected {version}")
        for f in ("samples.parquet", "series.parquet"):
            kv = pq.ParquetFile(os.path.join(b, f)).metadata.metadata
            if kv[b"strata.format_version"].decode() != version:
                sys.exit(f"{b}/{f}: key-value strata.format_version {kv[b'strata.format_version']!r}")

    # DuckDB: the documented whole-bucket SQL.
    sql = bucket_sql(bucket, version)
    con = duckdb.connect()
    rel = con.sql(sql)
    cols = rel.columns
    got = {}
    for r in rel.fetchall():
        row = dict(zip(cols, r))
        if not isinstance(row["value"], float):
            sys.exit(f"duckdb: value is {type(row['value'])}, not a double")
        got.setdefault(key_of(row), []).append((row["timestamp"], row["value"]))
    types = dict(zip(cols, [str(t) for t in rel.types]))
    if types["value"] != "DOUBLE":
        sys.exit(f"duckdb: value column has type {types['value']}")
    print(f"duckdb {duckdb.__version__}: {compare('duckdb', got, expected)} samples equal")

    # Polars: per block, value = coalesce(value, value_int / value_scale).
    got = {}
    for b in blocks:
        samples = pl.read_parquet(os.path.join(b, "samples.parquet"))
        series = pl.read_parquet(os.path.join(b, "series.parquet"))
        if "value_int" in samples.columns:
            samples = samples.with_columns(
                pl.coalesce(pl.col("value"), pl.col("value_int") / pl.col("value_scale")).alias("value")
            )
        if samples.schema["value"] != pl.Float64:
            sys.exit(f"polars: value has type {samples.schema['value']}")
        joined = samples.select("series_id", "timestamp", "value").join(series, on="series_id")
        for row in joined.iter_rows(named=True):
            got.setdefault(key_of(row), []).append((row["timestamp"], row["value"]))
    print(f"polars {pl.__version__}: {compare('polars', got, expected)} samples equal")

    # pyarrow: per block, with arrow compute.
    got = {}
    for b in blocks:
        samples = pq.read_table(os.path.join(b, "samples.parquet"))
        series = pq.read_table(os.path.join(b, "series.parquet")).to_pylist()
        value = samples["value"]
        if "value_int" in samples.column_names:
            value = pc.coalesce(value, pc.divide(pc.cast(samples["value_int"], pa.float64()), samples["value_scale"]))
        if value.type != pa.float64():
            sys.exit(f"pyarrow: value has type {value.type}")
        keys = [key_of(s) for s in series]
        for sid, t, v in zip(samples["series_id"].to_pylist(), samples["timestamp"].to_pylist(), value.to_pylist()):
            got.setdefault(keys[sid], []).append((t, v))
    print(f"pyarrow {pa.__version__}: {compare('pyarrow', got, expected)} samples equal")


if __name__ == "__main__":
    main()
