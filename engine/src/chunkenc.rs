//! Prometheus's XOR chunk (encoding 1): encoder and decoder, bit for bit compatible.
//!
//! Owns the float chunk codec: the head's in-memory compression, the one XOR decoder (also used by
//! ingest's TSDB block reader: [`decode_into`]) and, later, the StoreAPI server, which ships these
//! bytes to Thanos unchanged. The layout (spec `tsdb-format.md` §4.1):
//!
//! ```text
//!   bytes 0-1   sample count, u16 big endian
//!   sample 0    t0 as zigzag varint, v0 as 64 raw bits
//!   sample 1    t1 - t0 as uvarint, value as XOR against v0
//!   sample n    delta-of-delta in a bucket (0 | 10+14b | 110+17b | 1110+20b | 1111+64b),
//!               value as XOR: 0 (same) | 10 + bits in the previous window | 11 + 5b lead + 6b len + bits
//! ```
//!
//! Bits are written MSB first; the last byte is zero padded. Values travel as raw bits, so NaNs
//! (including Prometheus's stale marker `0x7ff0000000000002`), infinities and `-0.0` survive exactly.
//! A chunk holds at most 65535 samples; Prometheus cuts at [`SAMPLES_PER_CHUNK`].
//!
//! ```
//! use engine::chunkenc::{XorEncoder, decode};
//! let mut e = XorEncoder::new();
//! e.append(1000, 1.5).unwrap();
//! e.append(16000, 2.5).unwrap();
//! assert_eq!(decode(e.bytes()).unwrap(), vec![(1000, 1.5), (16000, 2.5)]);
//! ```

use crate::error::{Error, Result};

/// Samples per chunk at which Prometheus (and the head) cuts a new chunk.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Encoding byte of XOR chunks in Prometheus chunk files and the StoreAPI.
pub const ENCODING_XOR: u8 = 1;

/// Prometheus's stale marker: a NaN with these bits marks a series as gone.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is the stale marker (compared bit for bit).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// True when `x` fits the asymmetric `nbits` bucket: `-(2^(n-1) - 1) ..= 2^(n-1)`.
fn bit_range(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

/// Appends samples to one XOR chunk. Keeps the chunk bytes and the small state needed to continue
/// (about 48 bytes plus the bytes), so it doubles as the head's open chunk.
#[derive(Debug, Clone)]
pub struct XorEncoder {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (0 = last byte full, or no byte yet).
    free: u8,
    num: u16,
    t: i64,
    t_delta: i64,
    v_bits: u64,
    /// Leading zeros of the current XOR window; 0xff before the first window.
    leading: u8,
    trailing: u8,
}

impl Default for XorEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl XorEncoder {
    /// An empty chunk (just the 2-byte sample count).
    pub fn new() -> Self {
        XorEncoder { bytes: vec![0, 0], free: 0, num: 0, t: 0, t_delta: 0, v_bits: 0, leading: 0xff, trailing: 0 }
    }

    /// An empty chunk whose buffer has room for `bytes` bytes (avoids regrowth when the expected
    /// size is known, e.g. from the previous chunk of the series).
    pub fn with_capacity(bytes: usize) -> Self {
        let mut e = Self::new();
        e.bytes.reserve_exact(bytes.saturating_sub(2));
        e
    }

    /// Number of samples in the chunk.
    pub fn num_samples(&self) -> usize {
        self.num as usize
    }

    /// Timestamp of the last sample (0 when empty).
    pub fn last_t(&self) -> i64 {
        self.t
    }

    /// Value of the last sample (0.0 when empty).
    pub fn last_v(&self) -> f64 {
        f64::from_bits(self.v_bits)
    }

    /// The chunk bytes as Prometheus stores them (without encoding byte or CRC).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the encoder into its bytes, trimming spare capacity.
    pub fn into_bytes(self) -> Box<[u8]> {
        self.bytes.into_boxed_slice()
    }

    /// Heap bytes held (capacity of the byte buffer).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// Releases spare buffer capacity (useful for idle series).
    pub fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
    }

    fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        if bit && let Some(last) = self.bytes.last_mut() {
            *last |= 1 << (self.free - 1);
        }
        self.free -= 1;
    }

    /// Writes one byte the way Prometheus's bit stream does: it always appends the next byte, so a
    /// byte written at a byte boundary leaves an empty trailing byte (8 free bits) behind. Chunks
    /// must reproduce that byte to be identical.
    fn write_byte(&mut self, b: u8) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        if let Some(last) = self.bytes.last_mut() {
            *last |= ((u16::from(b) << 8) >> (16 - u16::from(self.free))) as u8;
        }
        self.bytes.push((u16::from(b) << self.free) as u8);
    }

    /// Writes the low `n` bits of `v`, most significant first, with the byte layout of Prometheus's
    /// bit stream, which writes whole bytes first, then single bits (see [`Self::write_byte`]): when
    /// `n` is a multiple of 8 the stream ends in a byte with free bits, possibly an empty one. The
    /// bits are filled a byte at a time.
    #[inline]
    fn write_bits(&mut self, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        let mut left = n;
        while left > 0 {
            // Up to 56 bits per round, placed in a big-endian word after the bits already used in
            // the last byte (at most 7, so they fit).
            let k = left.min(56);
            let bits = (v >> (left - k)) & ((1u64 << k) - 1);
            let used = 8 - u32::from(self.free);
            let word = (bits << (64 - used - k)).to_be_bytes();
            let Some(last) = self.bytes.last_mut() else { return };
            *last |= word[0];
            let total = used + k;
            let len = self.bytes.len();
            self.bytes.extend_from_slice(&word[1..]);
            self.bytes.truncate(len + (total as usize - 1) / 8);
            self.free = ((8 - total % 8) % 8) as u8;
            left -= k;
        }
        if n.is_multiple_of(8) && self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
    }

    fn write_uvarint(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.write_byte((x as u8) | 0x80);
            x >>= 7;
        }
        self.write_byte(x as u8);
    }

    fn write_varint(&mut self, x: i64) {
        self.write_uvarint(((x << 1) ^ (x >> 63)) as u64);
    }

    /// Appends one sample. Fails when the chunk already holds 65535 samples. Timestamps are not
    /// checked (callers keep them increasing), exactly like Prometheus's appender.
    pub fn append(&mut self, t: i64, v: f64) -> Result<()> {
        if self.num == u16::MAX {
            return Err(Error::BadChunk {
                chunk: format!("XOR chunk being written ({} bytes)", self.bytes.len()),
                reason: format!("full at {} samples; cannot add sample at {t}", self.num),
            });
        }
        let v_bits = v.to_bits();
        match self.num {
            0 => {
                self.write_varint(t);
                self.write_bits(v_bits, 64);
            }
            1 => {
                let d = t.wrapping_sub(self.t);
                self.write_uvarint(d as u64);
                self.write_value(v_bits);
                self.t_delta = d;
            }
            _ => {
                let d = t.wrapping_sub(self.t);
                let dod = d.wrapping_sub(self.t_delta);
                if dod == 0 {
                    self.write_bit(false);
                } else if bit_range(dod, 14) {
                    // prefix and payload in one run: only the last write of a sample decides the
                    // byte layout (see `write_bits`), and the value always follows
                    self.write_bits((0b10 << 14) | (dod as u64 & 0x3fff), 16);
                } else if bit_range(dod, 17) {
                    self.write_bits((0b110 << 17) | (dod as u64 & 0x1_ffff), 20);
                } else if bit_range(dod, 20) {
                    self.write_bits((0b1110 << 20) | (dod as u64 & 0xf_ffff), 24);
                } else {
                    self.write_bits(0b1111, 4);
                    self.write_bits(dod as u64, 64);
                }
                self.write_value(v_bits);
                self.t_delta = d;
            }
        }
        self.t = t;
        self.v_bits = v_bits;
        self.num += 1;
        self.bytes[..2].copy_from_slice(&self.num.to_be_bytes());
        Ok(())
    }

    fn write_value(&mut self, v_bits: u64) {
        let x = v_bits ^ self.v_bits;
        if x == 0 {
            self.write_bit(false);
            return;
        }
        let mut leading = x.leading_zeros() as u8;
        let trailing = x.trailing_zeros() as u8;
        // The leading count has 5 bits.
        if leading >= 32 {
            leading = 31;
        }
        // Control bits go out in one run, the significant bits in a run of their own: the layout of
        // a stream ending on a byte boundary depends on the length of the last run (`write_bits`).
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.write_bits(0b10, 2);
            let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            self.write_bits(x >> self.trailing, sig);
            return;
        }
        self.leading = leading;
        self.trailing = trailing;
        let sig = 64 - u32::from(leading) - u32::from(trailing);
        // 64 significant bits are written as 0 in the 6-bit field.
        self.write_bits((0b11 << 11) | (u64::from(leading) << 6) | u64::from(sig & 63), 13);
        self.write_bits(x >> trailing, sig);
    }
}

/// Encodes samples into one chunk (at most 65535; Prometheus uses [`SAMPLES_PER_CHUNK`]).
pub fn encode(samples: &[(i64, f64)]) -> Result<Vec<u8>> {
    let mut e = XorEncoder::new();
    for &(t, v) in samples {
        e.append(t, v)?;
    }
    Ok(e.bytes)
}

/// Decodes a whole chunk into `(timestamp, value)` pairs.
pub fn decode(bytes: &[u8]) -> Result<Vec<(i64, f64)>> {
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    decode_into(bytes, &mut ts, &mut vs)?;
    Ok(ts.into_iter().zip(vs).collect())
}

/// Number of samples an XOR chunk says it holds (its first two bytes), if it has them.
pub fn num_samples(bytes: &[u8]) -> Option<u16> {
    let b = bytes.get(0..2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Where a chunk stopped decoding; cheap to build on the hot path, turned into an
/// [`Error::BadChunk`] by [`decode_into`].
#[derive(Debug, Clone, Copy)]
struct Fault {
    sample: usize,
    reason: &'static str,
}

/// Decodes an XOR chunk's bytes (Prometheus's chunk data: the 2-byte count and the bit stream,
/// without the chunk record's length, encoding byte or CRC), appending its timestamps and values to
/// `ts` and `vs`; returns the number of samples appended. Values come out bit-exact (NaNs, stale
/// markers). On error the vectors may hold part of the chunk. The one XOR decoder of the project: the
/// head and the TSDB block reader both use it.
pub fn decode_into(bytes: &[u8], ts: &mut Vec<i64>, vs: &mut Vec<f64>) -> Result<usize> {
    decode_xor(bytes, ts, vs).map_err(|f| Error::BadChunk {
        chunk: format!("XOR chunk ({} bytes, {} samples)", bytes.len(), num_samples(bytes).unwrap_or(0)),
        reason: format!("sample {}: {}", f.sample, f.reason),
    })
}

/// Decodes a Go `binary.Uvarint` at the start of `data`: the value and the number of bytes used,
/// or `None` when the bytes end first or the value does not fit in 64 bits. Used by the XOR
/// decoder here and by readers of Prometheus's TSDB files.
///
/// ```
/// assert_eq!(engine::chunkenc::uvarint(&[0xac, 0x02, 0xff]), Some((300, 2)));
/// assert_eq!(engine::chunkenc::uvarint(&[0x80]), None);
/// ```
#[inline]
pub fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut x: u64 = 0;
    let mut shift = 0u32;
    for (i, &b) in data.iter().enumerate().take(10) {
        if b < 0x80 {
            if i == 9 && b > 1 {
                return None;
            }
            return Some((x | (u64::from(b) << shift), i + 1));
        }
        x |= u64::from(b & 0x7f) << shift;
        shift += 7;
    }
    None
}

/// MSB-first bit reader. `buf` holds the next bits left-aligned; `n` of them are counted as loaded.
/// Bits of `buf` below the counted ones are either zero or the true next bits of the stream.
struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` to load.
    pos: usize,
    buf: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    #[inline(always)]
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0, buf: 0, n: 0 }
    }

    /// Loads bytes until at least 57 bits are counted or the data ends. Requires `n < 57`.
    #[inline(always)]
    fn refill(&mut self) {
        if let Some(w) = self.data.get(self.pos..self.pos + 8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            self.buf |= u64::from_be_bytes(a) >> self.n;
            let take = (63 - self.n) >> 3;
            self.pos += take as usize;
            self.n += take * 8;
        } else {
            while self.n <= 56 {
                let Some(&b) = self.data.get(self.pos) else { break };
                self.buf |= u64::from(b) << (56 - self.n);
                self.pos += 1;
                self.n += 8;
            }
        }
    }

    /// Reads `k` bits, 1 <= k <= 56.
    #[inline(always)]
    fn read(&mut self, k: u32) -> Option<u64> {
        if self.n < k {
            self.refill();
            if self.n < k {
                return None;
            }
        }
        let v = self.buf >> (64 - k);
        self.buf <<= k;
        self.n -= k;
        Some(v)
    }

    /// Reads `k` bits, 1 <= k <= 64.
    #[inline(always)]
    fn read_wide(&mut self, k: u32) -> Option<u64> {
        if k <= 56 {
            self.read(k)
        } else {
            let hi = self.read(k - 32)?;
            let lo = self.read(32)?;
            Some((hi << 32) | lo)
        }
    }

    /// Reads a prefix of up to `max` one-bits ended by a zero bit (the zero is consumed unless
    /// `max` ones came first); returns the number of ones.
    #[inline(always)]
    fn ones_prefix(&mut self, max: u32) -> Option<u32> {
        if self.n < max {
            self.refill();
        }
        let ones = self.buf.leading_ones().min(max);
        let used = if ones < max { ones + 1 } else { max };
        if used > self.n {
            return None;
        }
        self.buf <<= used;
        self.n -= used;
        Some(ones)
    }
}

/// Value decoder state: the previous value's bits and the current XOR window.
struct ValueState {
    bits: u64,
    leading: u32,
    trailing: u32,
}

impl ValueState {
    #[inline(always)]
    fn next(&mut self, br: &mut BitReader<'_>, sample: usize) -> Result<u64, Fault> {
        let trunc = Fault { sample, reason: "truncated value" };
        if br.n == 0 {
            br.refill();
        }
        // Fast path: a leading 0 bit means the value is unchanged.
        if br.n > 0 && br.buf >> 63 == 0 {
            br.buf <<= 1;
            br.n -= 1;
            return Ok(self.bits);
        }
        match br.ones_prefix(2).ok_or(trunc)? {
            0 => return Ok(self.bits),
            1 => {}
            _ => {
                let leading = br.read(5).ok_or(trunc)? as u32;
                let mut sig = br.read(6).ok_or(trunc)? as u32;
                if sig == 0 {
                    sig = 64;
                }
                if leading + sig > 64 {
                    return Err(Fault { sample, reason: "XOR window wider than 64 bits" });
                }
                self.leading = leading;
                self.trailing = 64 - leading - sig;
            }
        }
        let m = 64 - self.leading - self.trailing;
        let x = br.read_wide(m).ok_or(trunc)?;
        self.bits ^= x << self.trailing;
        Ok(self.bits)
    }
}

fn decode_xor(data: &[u8], ts: &mut Vec<i64>, vs: &mut Vec<f64>) -> Result<usize, Fault> {
    let num =
        usize::from(num_samples(data).ok_or(Fault { sample: 0, reason: "chunk shorter than its 2-byte header" })?);
    if num == 0 {
        return Ok(0);
    }
    ts.reserve(num);
    vs.reserve(num);
    let e0 = Fault { sample: 0, reason: "truncated first sample" };
    let rest = data.get(2..).ok_or(e0)?;
    let (u0, k) = uvarint(rest).ok_or(e0)?;
    let t0 = ((u0 >> 1) as i64) ^ -((u0 & 1) as i64);
    let v0 = rest.get(k..k + 8).ok_or(e0)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(v0);
    let v0 = u64::from_be_bytes(a);
    ts.push(t0);
    vs.push(f64::from_bits(v0));
    if num == 1 {
        return Ok(1);
    }
    let e1 = Fault { sample: 1, reason: "truncated timestamp delta" };
    let p = k + 8;
    let (d1, k2) = uvarint(rest.get(p..).ok_or(e1)?).ok_or(e1)?;
    let mut br = BitReader::new(rest.get(p + k2..).ok_or(e1)?);
    let mut val = ValueState { bits: v0, leading: 0, trailing: 0 };
    let mut delta = d1 as i64;
    let mut t = t0.wrapping_add(delta);
    ts.push(t);
    vs.push(f64::from_bits(val.next(&mut br, 1)?));
    for i in 2..num {
        let trunc = Fault { sample: i, reason: "truncated timestamp" };
        if br.n < 57 {
            br.refill();
        }
        // Fast path: a leading 0 bit means delta-of-delta 0.
        let dod: i64 = if br.n > 0 && br.buf >> 63 == 0 {
            br.buf <<= 1;
            br.n -= 1;
            0
        } else {
            match br.ones_prefix(4).ok_or(trunc)? {
                0 => 0,
                ones => {
                    let w = match ones {
                        1 => 14,
                        2 => 17,
                        3 => 20,
                        _ => 64,
                    };
                    let u = br.read_wide(w).ok_or(trunc)?;
                    if w == 64 {
                        u as i64
                    } else if u > (1 << (w - 1)) {
                        (u as i64) - (1i64 << w)
                    } else {
                        u as i64
                    }
                }
            }
        };
        delta = delta.wrapping_add(dod);
        t = t.wrapping_add(delta);
        ts.push(t);
        vs.push(f64::from_bits(val.next(&mut br, i)?));
    }
    Ok(num)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The bit stream as Prometheus writes it: whole bytes, then bit by bit.
    fn reference_write_bits(e: &mut XorEncoder, v: u64, mut n: u32) {
        if n == 0 {
            return;
        }
        let mut u = v << (64 - n);
        while n >= 8 {
            e.write_byte((u >> 56) as u8);
            u <<= 8;
            n -= 8;
        }
        while n > 0 {
            e.write_bit(u >> 63 == 1);
            u <<= 1;
            n -= 1;
        }
    }

    #[test]
    fn write_bits_lays_out_bytes_like_the_bit_by_bit_stream() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let (mut fast, mut slow) = (XorEncoder::new(), XorEncoder::new());
            for _ in 0..40 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = (x % 65) as u32;
                let v = x.rotate_left(17);
                match (x >> 60) % 4 {
                    0 => {
                        fast.write_bit(v & 1 == 1);
                        slow.write_bit(v & 1 == 1);
                    }
                    1 => {
                        fast.write_byte(v as u8);
                        slow.write_byte(v as u8);
                    }
                    _ => {
                        fast.write_bits(v, n);
                        reference_write_bits(&mut slow, v, n);
                    }
                }
                assert_eq!((&fast.bytes, fast.free), (&slow.bytes, slow.free), "after writing {n} bits of {v:#x}");
            }
        }
    }

    use crate::testkit::XorShift as Rng;

    fn same(a: &[(i64, f64)], b: &[(i64, f64)]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.0, y.0);
            assert_eq!(x.1.to_bits(), y.1.to_bits(), "value at t={}", x.0);
        }
    }

    #[test]
    fn round_trip_random_series() {
        let mut r = Rng(0x9e3779b97f4a7c15);
        for case in 0..200 {
            let n = 1 + (r.next_u64() % 300) as usize;
            let mut t = (r.next_u64() % 2_000_000_000_000) as i64 - 1_000_000_000_000;
            let mut v = (r.next_u64() % 1000) as f64;
            let mut s = Vec::new();
            for _ in 0..n {
                s.push((t, v));
                t += match case % 4 {
                    0 => 15_000,
                    1 => 15_000 + (r.next_u64() % 200) as i64 - 100,
                    2 => (r.next_u64() % 10_000_000) as i64,
                    _ => (r.next_u64() % 3) as i64,
                };
                v = match r.next_u64() % 5 {
                    0 => v,
                    1 => v + 1.0,
                    2 => f64::from_bits(r.next_u64()),
                    3 => (r.next_u64() % 100) as f64 / 7.0,
                    _ => -v,
                };
            }
            let bytes = encode(&s).unwrap();
            same(&decode(&bytes).unwrap(), &s);
        }
    }

    #[test]
    fn every_dod_bucket_edge() {
        // Deltas chosen so the delta-of-delta hits both ends of each bucket and just beyond.
        let dods: Vec<i64> = vec![
            0,
            1,
            -1,
            8192,
            -8191,
            8193,
            -8192,
            65536,
            -65535,
            65537,
            -65536,
            524288,
            -524287,
            524289,
            -524288,
            i64::from(i32::MAX),
            -(1i64 << 40),
            1i64 << 40,
        ];
        let mut s = vec![(0i64, 0.0), (1_000_000_000, 1.0)];
        let mut delta = 1_000_000_000i64;
        let mut t = 1_000_000_000i64;
        for (i, d) in dods.iter().enumerate() {
            delta += d;
            t += delta;
            s.push((t, i as f64));
        }
        let bytes = encode(&s).unwrap();
        same(&decode(&bytes).unwrap(), &s);
        // Extreme first timestamps and a huge first delta.
        for first in [i64::MIN, i64::MAX - 5, -1, 0, 1] {
            let s = vec![(first, 1.0), (first.wrapping_add(5), 2.0), (first.wrapping_add(5), 3.0)];
            same(&decode(&encode(&s).unwrap()).unwrap(), &s);
        }
    }

    #[test]
    fn special_values_survive_bit_exact() {
        let vals = [
            f64::NAN,
            f64::from_bits(STALE_NAN_BITS),
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::from_bits(1),
            f64::from_bits(STALE_NAN_BITS),
            1.0,
            f64::from_bits(u64::MAX),
        ];
        let s: Vec<(i64, f64)> = vals.iter().enumerate().map(|(i, v)| (i as i64 * 15_000, *v)).collect();
        let got = decode(&encode(&s).unwrap()).unwrap();
        same(&got, &s);
        assert!(is_stale_nan(got[1].1) && !is_stale_nan(got[0].1));
    }

    #[test]
    fn known_bytes_and_errors() {
        // One sample t=0 v=0.0: count 1, zigzag varint 0, then 64 zero bits.
        // Prometheus's bit stream leaves an empty byte after byte-aligned writes.
        assert_eq!(encode(&[(0, 0.0)]).unwrap(), vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // Empty chunk.
        assert!(decode(&[0, 0]).unwrap().is_empty());
        assert!(decode(&[0]).is_err());
        // A truncated chunk fails, naming the sample.
        let b = encode(&[(0, 1.0), (15, 2.0), (30, 3.5)]).unwrap();
        let e = decode(&b[..b.len() - 2]).unwrap_err().to_string();
        assert!(e.contains("sample 2"), "{e}");
        // 65535 samples fit, the next one does not.
        let mut enc = XorEncoder::new();
        for i in 0..65535 {
            enc.append(i, 1.0).unwrap();
        }
        assert!(enc.append(65535, 1.0).is_err());
        assert_eq!(decode(enc.bytes()).unwrap().len(), 65535);
    }

    fn uvarint(b: &[u8]) -> (u64, usize) {
        let (mut x, mut s) = (0u64, 0);
        for (i, &c) in b.iter().enumerate() {
            x |= u64::from(c & 0x7f) << s;
            if c < 0x80 {
                return (x, i + 1);
            }
            s += 7;
        }
        panic!("bad uvarint");
    }

    /// Builds a real Prometheus block with promtool and checks that every XOR chunk in it decodes
    /// and that our encoder reproduces its bytes exactly.
    #[test]
    fn matches_chunks_written_by_prometheus() {
        let have = std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
        if !have {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "promtool is required under CI=true");
            eprintln!("notice: promtool not found; skipping the Prometheus chunk comparison");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        // Series with regular, jittered, sparse and special-value samples; timestamps in seconds.
        let mut r = Rng(42);
        let mut vals = Vec::new();
        for i in 0..400u64 {
            let t = 1_700_000_000.0 + i as f64 * 15.0;
            vals.push(format!("reg_total{{i=\"a\"}} {} {t:.3}\n", i * 3));
            let jt = t + (r.next_u64() % 1000) as f64 / 1000.0;
            let v = f64::from_bits(r.next_u64() >> 2);
            vals.push(format!("jit{{i=\"b\"}} {v:e} {jt:.3}\n"));
            let g = match i % 7 {
                0 => "NaN".to_string(),
                1 => "+Inf".to_string(),
                2 => "-Inf".to_string(),
                3 => "-0.0".to_string(),
                _ => format!("{}", (i % 13) as f64 * 0.1),
            };
            vals.push(format!("gauge{{i=\"c\"}} {g} {t:.3}\n"));
            if i % 37 == 0 {
                vals.push(format!("sparse{{i=\"d\"}} {} {:.3}\n", i, t + (i * i) as f64 * 3.0));
            }
        }
        // OpenMetrics wants each metric family contiguous.
        for name in ["reg_total", "jit", "gauge", "sparse"] {
            text.push_str(&format!("# TYPE {name} {}\n", if name == "reg_total" { "counter" } else { "gauge" }));
            for l in vals.iter().filter(|l| l.starts_with(&format!("{name}{{"))) {
                text.push_str(l);
            }
        }
        text.push_str("# EOF\n");
        let input = dir.path().join("in.om");
        std::fs::write(&input, &text).unwrap();
        let out = dir.path().join("blocks");
        let st = std::process::Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&out)
            .output()
            .unwrap();
        assert!(st.status.success(), "promtool failed: {}", String::from_utf8_lossy(&st.stderr));
        let mut chunks = 0;
        let mut samples = 0;
        for block in std::fs::read_dir(&out).unwrap() {
            let seg = block.unwrap().path().join("chunks").join("000001");
            if !seg.exists() {
                continue;
            }
            let b = std::fs::read(&seg).unwrap();
            assert_eq!(&b[..4], &0x85BD40DDu32.to_be_bytes());
            let mut off = 8;
            while off < b.len() {
                let (len, n) = uvarint(&b[off..]);
                let enc = b[off + n];
                let data = &b[off + n + 1..off + n + 1 + len as usize];
                let crc = u32::from_be_bytes(b[off + n + 1 + len as usize..][..4].try_into().unwrap());
                assert_eq!(crc, crc32c::crc32c(&b[off + n..off + n + 1 + len as usize]));
                assert_eq!(enc, ENCODING_XOR);
                let s = decode(data).unwrap();
                assert!(!s.is_empty());
                assert_eq!(encode(&s).unwrap(), data, "re-encoded chunk at offset {off} of {}", seg.display());
                chunks += 1;
                samples += s.len();
                off += n + 1 + len as usize + 4;
            }
        }
        assert!(chunks >= 4, "expected several chunks, got {chunks}");
        assert_eq!(samples, 400 * 3 + 11);
    }
}
