//! A small, seedable, portable RNG (SplitMix64): one stream per sequence, so a sequence draws the
//! same numbers whatever else is in the batch.
#[derive(Debug, Clone)]
pub struct SeqRng {
    state: u64,
}

impl SeqRng {
    /// Stream `index` of `seed` (sequence `index` of a generate call).
    pub fn new(seed: u64, index: u64) -> Self {
        let mut r = Self { state: seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index.wrapping_add(1)) };
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A seed from the clock, for a sampling run given none (the output reports it).
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
