"""Checks a store's answers to downsampled StoreAPI Series requests against aggregates computed
here, in Python, from the raw samples the same store serves (no code shared with Strata; the
grpcio client, XOR decoder and xxhash64 are storeapi_client.py's).

    python storeapi_downsampled.py PROTO_DIR HOST:PORT < spec.json > report.json

spec: {"min_time", "max_time", "resolution", "matchers": [[type, name, value]],
       "batches": [[lo, hi], ...]}: the [minTime, maxTime) of each downsampled block, one batch
of every series each (docs/format.md §4a); raw samples outside them stay raw.

What is asserted, per series, for aggregates [COUNT, SUM], [MAX], [MIN] and [COUNTER] over the
whole range (Thanos's store gateway fills exactly the AggrChunk fields asked for):
* every chunk of a batch's time holds exactly the requested aggregates and no raw samples, the
  others hold raw samples equal to the raw answer;
* count/min/max per window equal those computed here (sum within 1e-12 relative), a window being
  the samples with the same t - t mod R + R - 1, the row at that window end except the batch's
  last row, capped at the batch's last sample;
* the counter chunks of a batch, concatenated, are Thanos's counter chunk: the batch's first raw
  sample, the reset-corrected counter (from the first value: + v on a reset, else + (v - prev))
  at each window, then the last row's timestamp repeated with the last raw value.
A [MAX] request over a 2-hour sub-range gets only chunks overlapping it, holding every window in
it. Exits non-zero on the first difference; prints what was checked.
"""

import json
import math
import os
import struct
import sys
import tempfile

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storeapi_client as client  # noqa: E402

STALE = 0x7FF0000000000002


def f64(bits):
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def expected_batch(samples, resolution):
    """Rows [(t, count, sum, min, max, counter)], first raw sample, last raw value of one batch."""
    samples = [(t, f64(b)) for t, b in samples if b != STALE]
    if not samples:
        return None
    rows, cur = [], None
    counter, prev = 0.0, None
    for t, v in samples:
        if prev is None:
            counter = v
        elif v < prev:
            counter += v
        else:
            counter += v - prev
        prev = v
        w = t - t % resolution + resolution - 1
        if cur is None or cur[0] != w:
            if cur is not None:
                rows.append(cur)
            cur = [w, 0, 0.0, math.inf, -math.inf, 0.0]
        cur[1] += 1
        cur[2] += v
        cur[3] = min(cur[3], v)
        cur[4] = max(cur[4], v)
        cur[5] = counter
    rows.append(cur)
    rows[-1][0] = min(rows[-1][0], samples[-1][0])
    return rows, samples[0], samples[-1][1]


def same(a, b, rel=0.0):
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def series_request(spec, name, aggregates, resolution, lo=None, hi=None):
    return {
        "name": name, "kind": "series", "matchers": spec["matchers"],
        "min_time": spec["min_time"] if lo is None else lo, "max_time": spec["max_time"] if hi is None else hi,
        "max_resolution_window": resolution, "aggregates": aggregates,
    }


def main():
    proto_dir, address = sys.argv[1], sys.argv[2]
    spec = json.load(sys.stdin)
    res, batches = spec["resolution"], spec["batches"]
    sets = {"count_sum": ["COUNT", "SUM"], "max": ["MAX"], "min": ["MIN"], "counter": ["COUNTER"]}
    sub_lo, sub_hi = spec["sub_range"]
    with tempfile.TemporaryDirectory() as tmp:
        mods = client.load_stubs(proto_dir, tmp)
        opts = [("grpc.max_receive_message_length", 2**31 - 1)]
        stub = mods["thanos.store_pb2_grpc"].StoreStub(grpc.insecure_channel(address, options=opts))
        raw = client.run_series(mods, stub, series_request(spec, "raw", [], 0))
        got = {k: client.run_series(mods, stub, series_request(spec, k, a, res)) for k, a in sets.items()}
        sub = client.run_series(mods, stub, series_request(spec, "sub", ["MAX"], res, sub_lo, sub_hi))

    report = {"series": 0, "windows": 0, "aggr_chunks": 0, "raw_samples_after_batches": 0}
    raw_by = {json.dumps(s["labels"]): [tuple(x) for c in s["chunks"] for x in c] for s in raw["series"]}
    assert raw_by, "the raw answer is empty"
    for key, aggrs in sets.items():
        by = {json.dumps(s["labels"]): s["chunks"] for s in got[key]["series"]}
        assert sorted(by) == sorted(raw_by), (key, sorted(by), sorted(raw_by))
        want_fields = sorted(a.lower() for a in aggrs)
        for lkey, samples in raw_by.items():
            chunks = by[lkey]
            exp_rows, exp_counter, rest = [], [], []
            for lo, hi in batches:
                e = expected_batch([s for s in samples if lo <= s[0] < hi], res)
                if e is None:
                    continue
                rows, first, last = e
                exp_rows += rows
                exp_counter += [first] + [(r[0], r[5]) for r in rows] + [(rows[-1][0], last)]
            rest = [s for s in samples if not any(lo <= s[0] < hi for lo, hi in batches)]
            aggr = [c for c in chunks if isinstance(c, dict)]
            raws = [tuple(x) for c in chunks if not isinstance(c, dict) for x in c]
            assert raws == rest, (key, lkey, "raw chunks differ from the raw samples outside the batches")
            mins = [c["min_time"] for c in aggr]
            assert mins == sorted(mins), (key, lkey, "chunks out of order", mins)
            for c in aggr:
                fields = sorted(k for k in c if k not in ("min_time", "max_time"))
                assert fields == want_fields, (key, lkey, "aggregates sent", fields, "asked", want_fields)
            for f in want_fields:
                got_f = [(t, f64(b)) for c in aggr for t, b in c[f]]
                if f == "counter":
                    assert len(got_f) == len(exp_counter), (lkey, "counter samples", len(got_f), len(exp_counter))
                    for g, w in zip(got_f, exp_counter):
                        assert g == w, (lkey, "counter", g, "expected", w)
                    continue
                col = {"count": 1, "sum": 2, "min": 3, "max": 4}[f]
                want = [(r[0], float(r[col])) for r in exp_rows]
                assert len(got_f) == len(want), (lkey, f, "windows", len(got_f), len(want))
                for g, w in zip(got_f, want):
                    assert g[0] == w[0] and same(g[1], w[1], 1e-12 if f == "sum" else 0.0), (lkey, f, g, "expected", w)
            report["windows"] += len(exp_rows)
            report["aggr_chunks"] += len(aggr)
            report["raw_samples_after_batches"] += len(rest)
        report["series"] += len(by)

    # The sub-range: chunks overlapping it only, together holding every window in it.
    for s in sub["series"]:
        lkey = json.dumps(s["labels"])
        aggr = [c for c in s["chunks"] if isinstance(c, dict)]
        assert aggr, (lkey, "no downsampled chunk in the sub-range")
        for c in aggr:
            assert c["min_time"] <= sub_hi and c["max_time"] >= sub_lo, (lkey, "chunk outside the range", c["min_time"])
        got_t = [t for c in aggr for t, _ in c["max"]]
        rows = []
        for lo, hi in batches:
            e = expected_batch([x for x in raw_by[lkey] if lo <= x[0] < hi], res)
            rows += e[0] if e else []
        in_range = [r[0] for r in rows if sub_lo <= r[0] <= sub_hi]
        assert set(in_range) <= set(got_t), (lkey, "windows of the sub-range missing")
        assert len(got_t) < len(rows), (lkey, "the sub-range got every chunk")
    report["sub_range_series"] = len(sub["series"])
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
