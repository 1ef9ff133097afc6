"""Notebook-style example: connect to `strata flight` with ADBC, load the last hour of a metric
into pandas and save a matplotlib plot (headless) as PNG.

    python examples/notebook_adbc.py --uri grpc://127.0.0.1:10911 --metric node_load1 --out load.png

Prints one line: the PNG path, the points plotted and the series (one line per `instance`).
"""
import argparse

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--uri", default="grpc://127.0.0.1:10911")
ap.add_argument("--token", help="bearer token (strata flight --flight.auth-token-file)")
ap.add_argument("--metric", default="node_load1")
ap.add_argument("--out", default="metric.png")
args = ap.parse_args()

kw = {}
if args.token:
    kw[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {args.token}"
with flightsql.connect(args.uri, db_kwargs=kw) as conn, conn.cursor() as cur:
    # The metric's own table: its labels are columns. Table names are identifiers: quote them.
    cur.execute(
        f'SELECT instance, timestamp, value FROM "{args.metric}" '
        "WHERE timestamp > (SELECT max(timestamp) FROM samples) - interval '1 hour' "
        "ORDER BY instance, timestamp"
    )
    df = cur.fetch_df()

wide = df.pivot(index="timestamp", columns="instance", values="value")
ax = wide.plot(figsize=(10, 4), legend=False, linewidth=0.8)
ax.set_title(f"{args.metric}, last hour")
ax.set_ylabel(args.metric)
plt.tight_layout()
plt.savefig(args.out, dpi=80)
print(f"wrote {args.out}: {len(df)} points, {wide.shape[1]} series")
