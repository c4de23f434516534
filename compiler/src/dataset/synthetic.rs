//! Synthetic classification data: Gaussian blobs, one per class, from a
//! seeded generator (the same numbers on every machine).

use super::{Table, Targets};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (1.0 - self.next_f64(), self.next_f64());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// `rows` samples of `features` values; class k's samples scatter with unit
/// variance around a centre drawn from N(0, 0.4²), so the classes are learnable
/// but overlap a little. Labels cycle 0, 1, …, classes − 1.
pub fn blobs(rows: usize, features: usize, classes: usize, seed: u64) -> Table {
    let mut rng = Rng(seed ^ 0x5EED_DA7A);
    let centres: Vec<f64> = (0..classes * features)
        .map(|_| 0.4 * rng.normal())
        .collect();
    let mut values = Vec::with_capacity(rows * features);
    let mut labels = Vec::with_capacity(rows);
    for row in 0..rows {
        let class = row % classes;
        for f in 0..features {
            values.push((centres[class * features + f] + rng.normal()) as f32);
        }
        labels.push(class as i64);
    }
    Table {
        features: values,
        targets: Targets::Classes {
            labels,
            shape: vec![],
            classes: classes as i64,
        },
        rows,
        feature_count: features,
        sample_shape: vec![features as i64],
    }
}
