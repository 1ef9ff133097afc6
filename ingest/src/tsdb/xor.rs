//! Test oracle for the XOR chunk decoder (`engine::chunkenc::decode_into`, the one XOR decoder of
//! the project, used by the TSDB block reader): an encoder written independently from Prometheus's
//! writer rules, and round-trip, edge-case and corruption tests against it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// A test-only XOR chunk encoder following Prometheus's writer rules (leading zeros clamped to 31,
/// first non-zero XOR always opens a new window, window reused when the new XOR fits in it).
pub(crate) mod encoder {
    /// MSB-first bit writer.
    #[derive(Debug, Default)]
    pub(crate) struct BitWriter {
        pub(crate) bytes: Vec<u8>,
        /// Bits used in the last byte (0 = start a new byte).
        used: u32,
    }

    impl BitWriter {
        pub(crate) fn bit(&mut self, b: bool) {
            self.bits(u64::from(b), 1);
        }
        pub(crate) fn bits(&mut self, v: u64, n: u32) {
            for i in (0..n).rev() {
                if self.used == 0 {
                    self.bytes.push(0);
                }
                let b = ((v >> i) & 1) as u8;
                if let Some(last) = self.bytes.last_mut() {
                    *last |= b << (7 - self.used);
                }
                self.used = (self.used + 1) % 8;
            }
        }
        pub(crate) fn byte(&mut self, b: u8) {
            self.bits(u64::from(b), 8);
        }
        pub(crate) fn uvarint(&mut self, mut v: u64) {
            while v >= 0x80 {
                self.byte((v as u8) | 0x80);
                v >>= 7;
            }
            self.byte(v as u8);
        }
        pub(crate) fn varint(&mut self, v: i64) {
            self.uvarint(((v << 1) ^ (v >> 63)) as u64);
        }
    }

    /// Encodes (timestamp, value bits) pairs into XOR chunk data.
    pub(crate) fn encode(samples: &[(i64, u64)]) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.bits(samples.len() as u64, 16);
        let (mut t_prev, mut delta, mut v_prev) = (0i64, 0i64, 0u64);
        let (mut leading, mut trailing) = (0xffu32, 0u32);
        for (i, &(t, v)) in samples.iter().enumerate() {
            if i == 0 {
                w.varint(t);
                w.bits(v, 64);
            } else {
                let d = t - t_prev;
                if i == 1 {
                    w.uvarint(d as u64);
                } else {
                    let dod = d - delta;
                    let fits = |n: u32| -((1i64 << (n - 1)) - 1) <= dod && dod <= (1i64 << (n - 1));
                    if dod == 0 {
                        w.bit(false);
                    } else if fits(14) {
                        w.bits(0b10, 2);
                        w.bits(dod as u64, 14);
                    } else if fits(17) {
                        w.bits(0b110, 3);
                        w.bits(dod as u64, 17);
                    } else if fits(20) {
                        w.bits(0b1110, 4);
                        w.bits(dod as u64, 20);
                    } else {
                        w.bits(0b1111, 4);
                        w.bits(dod as u64, 64);
                    }
                }
                delta = d;
                let x = v ^ v_prev;
                if x == 0 {
                    w.bit(false);
                } else {
                    w.bit(true);
                    let l = x.leading_zeros().min(31);
                    let tr = x.trailing_zeros();
                    if leading != 0xff && l >= leading && tr >= trailing {
                        w.bit(false);
                        w.bits(x >> trailing, 64 - leading - trailing);
                    } else {
                        leading = l;
                        trailing = tr;
                        w.bit(true);
                        w.bits(u64::from(l), 5);
                        let sig = 64 - l - tr;
                        w.bits(u64::from(sig % 64), 6);
                        w.bits(x >> tr, sig);
                    }
                }
            }
            t_prev = t;
            v_prev = v;
        }
        w.bytes
    }
}

mod tests {
    use engine::chunkenc::decode_into as decode_xor;

    use super::encoder::encode;

    const STALE: u64 = 0x7ff0_0000_0000_0002;

    fn roundtrip(samples: &[(i64, u64)]) {
        let data = encode(samples);
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        let n = decode_xor(&data, &mut ts, &mut vs).unwrap();
        assert_eq!(n, samples.len());
        let got: Vec<(i64, u64)> = ts.iter().zip(&vs).map(|(&t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, samples);
    }

    #[test]
    fn stale_markers_and_nans_are_bit_exact() {
        let nan_payload = 0x7ff8_0000_0000_0001u64;
        let s = vec![
            (1000, 1.5f64.to_bits()),
            (2000, STALE),
            (3000, STALE),
            (4000, 2.5f64.to_bits()),
            (5000, f64::NAN.to_bits()),
            (6000, nan_payload),
            (7000, STALE),
            (8000, (-0.0f64).to_bits()),
            (9000, f64::INFINITY.to_bits()),
        ];
        roundtrip(&s);
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        decode_xor(&encode(&s), &mut ts, &mut vs).unwrap();
        assert_eq!(vs[1].to_bits(), STALE);
        assert!(vs[1].is_nan());
        assert_eq!(vs[5].to_bits(), nan_payload);
        assert_eq!(ts, vec![1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]);
    }

    #[test]
    fn every_timestamp_bucket_and_window_shape() {
        // dods of 0, +-small, 14/17/20-bit edges, and 64-bit; values with varied windows.
        let deltas = [
            15_000i64,
            15_000,
            15_001,
            14_999,
            15_000 + 8192,
            15_000 - 8191,
            15_000 + 8193,
            15_000 + 65_536,
            15_000 - 65_535,
            15_000 + 65_537,
            15_000 + 524_288,
            15_000 - 524_287,
            15_000 + 524_289,
            1,
            10_000_000_000,
            1,
            15_000,
        ];
        let mut t = -5_000i64;
        let mut s = vec![(t, 0u64)];
        let vals = [
            1.0f64,
            1.0,
            2.0,
            1e300,
            -3.25,
            0.1,
            0.2,
            0.30000000000000004,
            1e-300,
            7.0,
            7.0,
            8.0,
            -8.0,
            5e-324,
            42.0,
            42.5,
            1.0,
        ];
        for (d, v) in deltas.iter().zip(vals) {
            t += d;
            s.push((t, v.to_bits()));
        }
        roundtrip(&s);
        // single sample, two samples, negative first timestamp
        roundtrip(&[(-1, 3.0f64.to_bits())]);
        roundtrip(&[(i64::MIN / 2, 3.0f64.to_bits()), (0, u64::MAX)]);
        roundtrip(&[]);
    }

    #[test]
    fn long_random_series_round_trips() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = 1_700_000_000_000i64;
        let mut v = 100.0f64;
        let mut s = Vec::new();
        for i in 0..5000 {
            let r = next();
            t += 15_000 + (r % 7) as i64 - 3 + if r % 97 == 0 { 1_000_000 } else { 0 };
            v += match r % 5 {
                0 => 0.0,
                1 => 1.0,
                2 => (r % 1000) as f64 / 7.0,
                _ => -((r % 13) as f64),
            };
            let bits = if i % 500 == 499 { STALE } else { v.to_bits() };
            s.push((t, bits));
        }
        roundtrip(&s);
    }

    #[test]
    fn truncated_and_malformed_chunks_error_without_panic() {
        let s: Vec<(i64, u64)> = (0..50).map(|i| (i * 1000 + (i * i) % 7, ((i as f64) * 1.37).to_bits())).collect();
        let data = encode(&s);
        for cut in 0..data.len() {
            let (mut ts, mut vs) = (Vec::new(), Vec::new());
            let r = decode_xor(&data[..cut], &mut ts, &mut vs);
            // The last byte holds at least one bit of the last sample, so every cut must fail.
            let e = r.unwrap_err().to_string();
            assert!(e.contains(": truncated") || e.contains("header"), "{e}");
        }
        let e = decode_xor(&[0x00], &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().ends_with("sample 0: chunk shorter than its 2-byte header"), "{e}");
        // A chunk claiming more samples than it holds.
        let mut d = data.clone();
        d[0] = 0xff;
        let e = decode_xor(&d, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        let msg = e.to_string();
        let sample: usize = msg.rsplit("sample ").next().and_then(|r| r.split(':').next()).unwrap().parse().unwrap();
        assert!(sample >= 50, "{msg}");
        // Fuzz-ish: random bytes never panic.
        let mut x = 7u64;
        for _ in 0..2000 {
            let mut buf = Vec::new();
            for _ in 0..((x % 40) + 2) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                buf.push((x >> 33) as u8);
            }
            let _ = decode_xor(&buf, &mut Vec::new(), &mut Vec::new());
        }
    }
}
