//! Synthetic classification data: Gaussian blobs, one per class, from a
//! seeded generator (the same numbers on every machine).

use super::{Table, Targets};
use crate::util::rng::Rng;

/// `rows` samples of `features` values; class k's samples scatter with unit
/// variance around a centre drawn from N(0, 0.4²), so the classes are learnable
/// but overlap a little. Labels cycle 0, 1, …, classes − 1.
pub fn blobs(rows: usize, features: usize, classes: usize, seed: u64) -> Table {
    let mut rng = Rng::from_state(seed ^ 0x5EED_DA7A);
    let centres: Vec<f64> = (0..classes * features)
        .map(|_| 0.4 * rng.next_normal())
        .collect();
    let mut values = Vec::with_capacity(rows * features);
    let mut labels = Vec::with_capacity(rows);
    for row in 0..rows {
        let class = row % classes;
        for f in 0..features {
            values.push((centres[class * features + f] + rng.next_normal()) as f32);
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
        skipped: Default::default(),
    }
}
