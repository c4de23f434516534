//! A small seeded generator (SplitMix64) and a stable hash (FNV-1a), the
//! one implementation of each: data order, initial weights, synthetic data,
//! dropout seeds and the fuzz tests all draw from it. Kept apart from
//! libtorch's generator so the data order does not depend on how many random
//! numbers the model drew.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The generator's whole state, to save and restore with [`Rng::from_state`].
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn from_state(state: u64) -> Self {
        Rng(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A generator for one named stream (e.g. one parameter's initial
    /// values): the seed mixed with an FNV-1a hash of the name.
    pub fn for_name(seed: u64, name: &str) -> Self {
        Rng::new(seed ^ fnv1a(name.as_bytes()).rotate_left(17))
    }

    /// Uniform in `0..n` (modulo bias is negligible for the small `n` used).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // in (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// FNV-1a, 64 bits: a stable hash of bytes (names, the plan's text).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    Fnv1a::new().update(bytes).finish()
}

/// FNV-1a fed in pieces (a file read in chunks): the same hash as
/// [`fnv1a`] of the pieces joined.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    pub fn new() -> Self {
        Fnv1a(0xCBF2_9CE4_8422_2325)
    }

    pub fn update(mut self, bytes: &[u8]) -> Self {
        self.0 = bytes
            .iter()
            .fold(self.0, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01B3));
        self
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}
