//! Test support shared by the crates' own tests and the end-to-end tests: small deterministic
//! pseudo-random generators, so that synthetic data is the same on every run and no test needs a
//! random-number crate. Not part of Strata's API (hidden from the docs).

/// Marsaglia's xorshift (shifts 13, 7, 17). Never seed it with 0 (it stays 0).
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// xorshift64* (Vigna): xorshift with shifts 12, 25, 27 and a multiplied output. Never seed it
/// with 0 (it stays 0).
#[derive(Debug, Clone)]
pub struct XorShift64Star(pub u64);

impl XorShift64Star {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `[0, n)` (`n` > 0; the modulo's small bias does not matter to tests).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_fixed() {
        // Hand-computed first outputs, so that a change to either generator (and so to every
        // test's synthetic data) shows here.
        let mut x = XorShift(1);
        assert_eq!(x.next_u64(), 1_082_269_761);
        let mut s = XorShift64Star(1);
        assert_eq!(s.next_u64(), 0x47e4_ce4b_896c_dd1d);
    }
}
