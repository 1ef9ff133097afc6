"""A Thanos StoreAPI server that shares no code with Strata: gRPC stubs generated at start from the
project's .proto files with grpcio-tools, XOR chunks written by the encoder below from the bit
layout of spec/storeapi.md section 5.1. It serves a fixed data set (see `SERIES`) so the test can
check Strata's StoreAPI client (`strata query --endpoint`) against values it computes itself.

Frames sent for a Series call, in label order: the first series split over two `series` frames
(first chunk, then the rest), a `warning` frame naming the tenant the call carried, then every
other matching series in one `batch` frame.

Usage: storeapi_server.py PROTO_DIR OUT_DIR PORT   (prints READY once listening)
"""

import math
import os
import re
import subprocess
import sys
from concurrent import futures

T0 = 1_700_000_000_000  # ms
EXTERNAL = {"cluster": "wire"}


def timestamps():
    """240 samples every 15 s with a jitter of up to 996 ms, and a 10 minute gap (samples 100-139)."""
    return [T0 + i * 15_000 + (i * 7919) % 997 for i in range(240) if not 100 <= i < 140]


def counter_value(i, k):
    return i * 1.5 * k


def gauge_value(i):
    return (i * 0.1 + 1 / 3) * (-1) ** i if i % 17 else 2.5e-7 * i


def samples(kind):
    out = []
    ts = timestamps()
    for n, t in enumerate(ts):
        i = (t - T0) // 15_000
        if kind == "counter1":
            out.append((t, counter_value(i, 1)))
        elif kind == "counter2":
            out.append((t, counter_value(i, 2)))
        else:
            out.append((t, gauge_value(i)))
    return out


# (labels without the external ones, samples)
SERIES = [
    ({"__name__": "wire_counter", "instance": "1", "job": "a"}, samples("counter1")),
    ({"__name__": "wire_counter", "instance": "2", "job": "a"}, samples("counter2")),
    ({"__name__": "wire_gauge", "job": "b"}, samples("gauge")),
]


class BitWriter:
    def __init__(self):
        self.bits = []

    def write(self, value, n):
        for k in range(n - 1, -1, -1):
            self.bits.append((value >> k) & 1)

    def to_bytes(self):
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def f64_bits(v):
    import struct
    return struct.unpack(">Q", struct.pack(">d", v))[0]


def uvarint_bytes(x):
    out = []
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)
    return out


def clz64(x):
    return 64 - x.bit_length()


def ctz64(x):
    return (x & -x).bit_length() - 1


def xor_chunk(points):
    """One XOR chunk: u16 count, then t0 zigzag varint + 64 raw value bits, t1-t0 uvarint, then
    delta-of-delta buckets; values XOR-encoded against the previous one."""
    w = BitWriter()
    lead, trail = 0xFF, 0
    prev_t = prev_delta = prev_v = 0
    for n, (t, v) in enumerate(points):
        vb = f64_bits(v)
        if n == 0:
            zz = (t << 1) ^ (t >> 63)
            for b in uvarint_bytes(zz & 0xFFFFFFFFFFFFFFFF):
                w.write(b, 8)
            w.write(vb, 64)
        else:
            delta = t - prev_t
            if n == 1:
                for b in uvarint_bytes(delta):
                    w.write(b, 8)
            else:
                dod = delta - prev_delta
                for prefix, plen, nbits in ((0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)):
                    if -(1 << (nbits - 1)) + 1 <= dod <= 1 << (nbits - 1):
                        if dod == 0:
                            w.write(0, 1)
                        else:
                            w.write(prefix, plen)
                            w.write(dod & ((1 << nbits) - 1), nbits)
                        break
                else:
                    w.write(0b1111, 4)
                    w.write(dod & 0xFFFFFFFFFFFFFFFF, 64)
            x = vb ^ prev_v
            if x == 0:
                w.write(0, 1)
            else:
                w.write(1, 1)
                l, tr = min(clz64(x), 31), ctz64(x)
                if lead != 0xFF and l >= lead and tr >= trail:
                    w.write(0, 1)
                    w.write(x >> trail, 64 - lead - trail)
                else:
                    lead, trail = l, tr
                    sig = 64 - l - tr
                    w.write(1, 1)
                    w.write(l, 5)
                    w.write(sig & 63, 6)
                    w.write(x >> tr, sig)
            prev_delta = delta
        prev_t, prev_v = t, vb
    return len(points).to_bytes(2, "big") + w.to_bytes()


def main():
    proto_dir, out_dir, port = sys.argv[1], sys.argv[2], sys.argv[3]
    import grpc
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    os.makedirs(out_dir, exist_ok=True)
    files = ["prometheus/types.proto", "thanos/types.proto", "thanos/store.proto", "thanos/info.proto", "hintspb/hints.proto"]
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}"] + files)
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, out_dir)
    from prometheus import types_pb2 as prom
    from thanos import info_pb2, info_pb2_grpc, store_pb2, store_pb2_grpc, types_pb2

    def full_labels(l):
        d = dict(l)
        d.update(EXTERNAL)
        return dict(sorted(d.items()))

    def pb_labels(d):
        return [prom.Label(name=k, value=v) for k, v in d.items()]

    def matches(ms, labels):
        for m in ms:
            v = labels.get(m.name, "")
            if m.type == prom.LabelMatcher.EQ and v != m.value:
                return False
            if m.type == prom.LabelMatcher.NEQ and v == m.value:
                return False
            if m.type == prom.LabelMatcher.RE and not re.fullmatch(m.value, v, re.S):
                return False
            if m.type == prom.LabelMatcher.NRE and re.fullmatch(m.value, v, re.S):
                return False
        return True

    def selected(ms, mint, maxt):
        out = []
        for l, pts in SERIES:
            fl = full_labels(l)
            if matches(ms, fl) and any(mint <= t <= maxt for t, _ in pts):
                out.append((fl, pts))
        out.sort(key=lambda s: list(s[0].items()))
        return out

    def chunks(pts):
        # 120 samples per chunk, as Prometheus cuts them
        out = []
        for i in range(0, len(pts), 120):
            c = pts[i:i + 120]
            out.append(types_pb2.AggrChunk(min_time=c[0][0], max_time=c[-1][0],
                                           raw=types_pb2.Chunk(type=types_pb2.Chunk.XOR, data=xor_chunk(c))))
        return out

    def tenant_of(context):
        return dict(context.invocation_metadata()).get("thanos-tenant", "")

    class Store(store_pb2_grpc.StoreServicer):
        def Series(self, req, context):
            sel = selected(req.matchers, req.min_time, req.max_time)
            first = True
            rest = []
            for labels, pts in sel:
                cs = [] if req.skip_chunks else chunks(pts)
                if first:
                    first = False
                    yield store_pb2.SeriesResponse(series=types_pb2.Series(labels=pb_labels(labels), chunks=cs[:1]))
                    yield store_pb2.SeriesResponse(series=types_pb2.Series(labels=pb_labels(labels), chunks=cs[1:]))
                    yield store_pb2.SeriesResponse(warning=f"wire-server warning (tenant {tenant_of(context)})")
                else:
                    rest.append(types_pb2.Series(labels=pb_labels(labels), chunks=cs))
            if rest:
                yield store_pb2.SeriesResponse(batch=types_pb2.SeriesBatch(series=rest))

        def LabelNames(self, req, context):
            names = set()
            for labels, _ in selected(req.matchers, req.start, req.end):
                names.update(labels)
            return store_pb2.LabelNamesResponse(names=sorted(names))

        def LabelValues(self, req, context):
            vals = {l[req.label] for l, _ in selected(req.matchers, req.start, req.end) if req.label in l}
            return store_pb2.LabelValuesResponse(values=sorted(vals))

    class Info(info_pb2_grpc.InfoServicer):
        def Info(self, req, context):
            all_ts = [t for _, pts in SERIES for t, _ in pts]
            return info_pb2.InfoResponse(
                label_sets=[types_pb2.ZLabelSet(labels=pb_labels(EXTERNAL))],
                ComponentType="store",
                store=info_pb2.StoreInfo(min_time=min(all_ts), max_time=max(all_ts)),
            )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    store_pb2_grpc.add_StoreServicer_to_server(Store(), server)
    info_pb2_grpc.add_InfoServicer_to_server(Info(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("READY", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
