"""Prints the single value a Flight SQL query returns. Usage: flight_query.py GRPC_URI TOKEN SQL"""
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql

uri, token, sql = sys.argv[1:4]
kw = {adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"} if token else {}
with flightsql.connect(uri, db_kwargs=kw) as conn, conn.cursor() as cur:
    cur.execute(sql)
    print(cur.fetchone()[0])
