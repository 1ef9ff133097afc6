"""Runs each SQL statement through ADBC (Flight SQL) and prints a JSON list of their first values.

Usage: flight_queries.py GRPC_URI SQL...
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql

uri, statements = sys.argv[1], sys.argv[2:]
out = []
with flightsql.connect(uri) as conn, conn.cursor() as cur:
    for sql in statements:
        cur.execute(sql)
        row = cur.fetchone()
        out.append(None if row is None else row[0])
print(json.dumps(out))
