"""A Thanos StoreAPI client sharing no code with Strata: grpcio with stubs generated (at run time,
into a temporary directory) from the project's .proto files, an XOR chunk decoder and xxhash64
written here from the spec (shared/spec/storeapi.md §5.1, §2.1).

    python storeapi_client.py PROTO_DIR HOST:PORT < requests.json > results.json

Each request is {"name", "kind": info|label_names|label_values|series, ...fields, optional
"metadata": [[key, value], ...] sent as gRPC metadata (e.g. thanos-tenant)}; each result holds
what came back (decoded chunks as [timestamp, value bits] pairs; a downsampled chunk as an object
holding each aggregate present: {"min_time", "max_time", "count": [...], ...}) or {"error": {"code",
"details"}}. A series request may carry "max_resolution_window" and "aggregates" (names: COUNT, ...).
Checks done here: every chunk's hash is the xxhash64 of its bytes, its min/max time are its first
and last sample (window), its type is XOR (0), and series of a shard request belong to that shard.
"""

import json
import os
import subprocess
import sys
import tempfile

import grpc
import grpc_tools

# --- xxhash64 (from the algorithm's description) --------------------------------------------------

P1, P2, P3 = 11400714785074694791, 14029467366897019727, 1609587929392839161
P4, P5 = 9650029242287828579, 2870177450012600261
M64 = (1 << 64) - 1


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def xx_round(acc, lane):
    acc = (acc + lane * P2) & M64
    return (rotl(acc, 31) * P1) & M64


def xx_merge(acc, val):
    acc ^= xx_round(0, val)
    return (acc * P1 + P4) & M64


def xxh64(data, seed=0):
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed & M64, (seed - P1) & M64]
        while i + 32 <= n:
            for k in range(4):
                v[k] = xx_round(v[k], int.from_bytes(data[i + 8 * k:i + 8 * k + 8], "little"))
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M64
        for k in range(4):
            h = xx_merge(h, v[k])
    else:
        h = (seed + P5) & M64
    h = (h + n) & M64
    while i + 8 <= n:
        h ^= xx_round(0, int.from_bytes(data[i:i + 8], "little"))
        h = (rotl(h, 27) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i:i + 4], "little") * P1) & M64
        h = (rotl(h, 23) * P2 + P3) & M64
        i += 4
    while i < n:
        h ^= (data[i] * P5) & M64
        h = (rotl(h, 11) * P1) & M64
        i += 1
    h ^= h >> 33
    h = (h * P2) & M64
    h ^= h >> 29
    h = (h * P3) & M64
    h ^= h >> 32
    return h


assert xxh64(b"") == 0xEF46DB3751D8E999
assert xxh64(b"abc") == 0x44BC2CF5AD770999

# --- XOR chunk decoder (Prometheus chunkenc layout, bits MSB first) -------------------------------


class Bits:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def bit(self):
        b = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return b

    def bits(self, n):
        v = 0
        for _ in range(n):
            v = (v << 1) | self.bit()
        return v

    def uvarint(self):
        x, shift = 0, 0
        while True:
            b = self.bits(8)
            x |= (b & 0x7F) << shift
            if b < 0x80:
                return x
            shift += 7

    def varint(self):
        u = self.uvarint()
        return -((u + 1) >> 1) if u & 1 else u >> 1


def dod_bits(r, n):
    v = r.bits(n)
    if n == 64:
        return v - (1 << 64) if v >= (1 << 63) else v
    # Buckets hold -(2^(n-1) - 1) ..= 2^(n-1).
    return v - (1 << n) if v > (1 << (n - 1)) else v


def decode_xor(data):
    """[(timestamp, value bits)] of one chunk; trailing bytes are ignored."""
    count = int.from_bytes(data[0:2], "big")
    r = Bits(data[2:])
    out = []
    t = delta = value = leading = trailing = 0
    for i in range(count):
        if i == 0:
            t = r.varint()
            value = r.bits(64)
            out.append((t, value))
            continue
        if i == 1:
            delta = r.uvarint()
        else:
            if r.bit() == 0:
                dod = 0
            elif r.bit() == 0:
                dod = dod_bits(r, 14)
            elif r.bit() == 0:
                dod = dod_bits(r, 17)
            elif r.bit() == 0:
                dod = dod_bits(r, 20)
            else:
                dod = dod_bits(r, 64)
            delta += dod
        t += delta
        if r.bit() == 1:
            if r.bit() == 1:
                leading = r.bits(5)
                sig = r.bits(6) or 64
                trailing = 64 - leading - sig
            sig = 64 - leading - trailing
            value ^= r.bits(sig) << trailing
        out.append((t, value))
    return out


# --- stubs and calls ------------------------------------------------------------------------------


def load_stubs(proto_dir, out_dir):
    protos = []
    for root, _, files in os.walk(proto_dir):
        protos += [os.path.relpath(os.path.join(root, f), proto_dir) for f in files if f.endswith(".proto")]
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir, "-I", well_known,
         "--python_out", out_dir, "--grpc_python_out", out_dir] + sorted(protos),
        check=True,
    )
    sys.path.insert(0, out_dir)
    import importlib
    mods = {}
    for m in ["thanos.store_pb2", "thanos.store_pb2_grpc", "thanos.info_pb2", "thanos.info_pb2_grpc",
              "thanos.types_pb2", "hintspb.hints_pb2", "prometheus.types_pb2"]:
        mods[m] = importlib.import_module(m)
    return mods


def shard_of(labels, info):
    """The shard of a label set (list of [name, value]) per spec §2.1."""
    names = set(info["labels"])
    buf = b""
    for n, v in labels:
        if (n in names) == info["by"]:
            buf += n.encode() + b"\xff" + v.encode() + b"\xff"
    return xxh64(buf) % info["total_shards"]


AGGR_FIELDS = ["count", "sum", "min", "max", "counter"]


def decode_chunk(mods, labels, chunk):
    """The samples of one XOR chunk, its type and hash checked."""
    xor = mods["thanos.types_pb2"].Chunk.XOR
    assert chunk.type == xor and xor == 0, chunk
    data = bytes(chunk.data)
    assert chunk.hash == xxh64(data), (labels, chunk.hash, xxh64(data))
    return decode_xor(data)


def decode_aggr_chunk(mods, labels, c):
    """A downsampled chunk (no raw) as {"min_time", "max_time", aggregate: [[t, value bits]]} for
    the aggregates present. Checks: every aggregate of a window (count/sum/min/max) spans exactly
    [min_time, max_time]; the counter's windows lie inside it, its first sample (the raw first
    value) may lie before min_time."""
    out = {"min_time": c.min_time, "max_time": c.max_time}
    for f in AGGR_FIELDS:
        if not c.HasField(f):
            continue
        samples = decode_chunk(mods, labels, getattr(c, f))
        if f == "counter":
            assert all(t <= c.max_time for t, _ in samples), (labels, f, c.max_time)
        else:
            assert 0 < len(samples) <= 120, len(samples)
            assert c.min_time == samples[0][0] and c.max_time == samples[-1][0], (labels, f, c.min_time, c.max_time)
        out[f] = [[t, v] for t, v in samples]
    assert len(out) > 2, (labels, "a chunk without raw samples or aggregates")
    return out


def run_series(mods, stub, q):
    st, types = mods["thanos.store_pb2"], mods["prometheus.types_pb2"]
    req = st.SeriesRequest(
        min_time=q["min_time"], max_time=q["max_time"],
        matchers=[types.LabelMatcher(type=t, name=n, value=v) for t, n, v in q.get("matchers", [])],
        skip_chunks=q.get("skip_chunks", False), limit=q.get("limit", 0),
        without_replica_labels=q.get("without_replica_labels", []),
        response_batch_size=q.get("response_batch_size", 0),
        max_resolution_window=q.get("max_resolution_window", 0),
        aggregates=[mods["thanos.types_pb2"].Aggr.Value(a) for a in q.get("aggregates", [])],
    )
    shard = q.get("shard_info")
    if shard:
        req.shard_info.CopyFrom(st.ShardInfo(**shard))
    if q.get("hints_block_matchers"):
        hints = mods["hintspb.hints_pb2"].SeriesRequestHints(
            block_matchers=[types.LabelMatcher(type=t, name=n, value=v) for t, n, v in q["hints_block_matchers"]])
        req.hints.Pack(hints)
        assert req.hints.type_url == "type.googleapis.com/hintspb.SeriesRequestHints", req.hints.type_url
    frames, batch_frames, series = 0, 0, []
    for resp in stub.Series(req, metadata=[tuple(m) for m in q.get("metadata", [])]):
        frames += 1
        kind = resp.WhichOneof("result")
        if kind == "series":
            got = [resp.series]
        elif kind == "batch":
            batch_frames += 1
            got = list(resp.batch.series)
        else:
            raise AssertionError(f"unexpected frame {kind}: {resp}")
        for s in got:
            labels = [[l.name, l.value] for l in s.labels]
            chunks = []
            for c in s.chunks:
                if c.HasField("raw"):
                    samples = decode_chunk(mods, labels, c.raw)
                    assert 0 < len(samples) <= 120, len(samples)
                    assert c.min_time == samples[0][0] and c.max_time == samples[-1][0], (c.min_time, c.max_time)
                    chunks.append([[t, v] for t, v in samples])
                else:
                    chunks.append(decode_aggr_chunk(mods, labels, c))
            if shard:
                assert shard_of(labels, shard) == shard["shard_index"], labels
            series.append({"labels": labels, "chunks": chunks})
    return {"frames": frames, "batch_frames": batch_frames, "series": series}


def main():
    proto_dir, address = sys.argv[1], sys.argv[2]
    requests = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as tmp:
        mods = load_stubs(proto_dir, tmp)
        opts = [("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)]
        channel = grpc.insecure_channel(address, options=opts)
        store = mods["thanos.store_pb2_grpc"].StoreStub(channel)
        info = mods["thanos.info_pb2_grpc"].InfoStub(channel)
        st, types = mods["thanos.store_pb2"], mods["prometheus.types_pb2"]
        results = {}
        for q in requests:
            try:
                if q["kind"] == "info":
                    r = info.Info(mods["thanos.info_pb2"].InfoRequest(),
                                  metadata=[tuple(m) for m in q.get("metadata", [])])
                    out = {
                        "component_type": r.ComponentType,
                        "label_sets": [[[l.name, l.value] for l in s.labels] for s in r.label_sets],
                        "has_store": r.HasField("store"),
                        "min_time": r.store.min_time, "max_time": r.store.max_time,
                        "supports_sharding": r.store.supports_sharding,
                        "supports_without_replica_labels": r.store.supports_without_replica_labels,
                        "tsdb_infos": [[[[l.name, l.value] for l in t.labels.labels], t.min_time, t.max_time]
                                       for t in r.store.tsdb_infos],
                    }
                elif q["kind"] == "label_names":
                    r = store.LabelNames(st.LabelNamesRequest(
                        start=q["start"], end=q["end"], limit=q.get("limit", 0),
                        matchers=[types.LabelMatcher(type=t, name=n, value=v) for t, n, v in q.get("matchers", [])]))
                    out = {"names": list(r.names)}
                elif q["kind"] == "label_values":
                    r = store.LabelValues(st.LabelValuesRequest(
                        label=q["label"], start=q["start"], end=q["end"], limit=q.get("limit", 0),
                        matchers=[types.LabelMatcher(type=t, name=n, value=v) for t, n, v in q.get("matchers", [])]))
                    out = {"values": list(r.values)}
                else:
                    out = run_series(mods, store, q)
            except grpc.RpcError as e:
                out = {"error": {"code": e.code().name, "details": e.details()}}
            results[q["name"]] = out
        json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
