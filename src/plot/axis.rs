//! Axis ranges and tick marks at "nice" values: 1, 2 or 5 times a power of ten.
//!
//! Tick values are built from integers (`k × m × 10^e`) rather than by adding
//! a float step, so they print exactly and the same input gives the same bytes.

/// One axis of a panel: the value range it spans and its labelled ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    pub ticks: Vec<f64>,
    pub labels: Vec<String>,
}

impl Axis {
    /// A linear axis covering `[lo, hi]`, widened out to whole tick steps, with
    /// about `max_ticks` intervals. `integer` keeps the step at 1 or more (steps).
    pub fn linear(lo: f64, hi: f64, max_ticks: usize, integer: bool) -> Axis {
        let (lo, hi) = widen(lo, hi);
        let (mut m, mut e) = nice_step(hi - lo, max_ticks);
        if integer && e < 0 {
            (m, e) = (1, 0);
        }
        let step = m as f64 * pow10(e);
        let first = (lo / step + 1e-9).floor() as i64;
        let last = (hi / step - 1e-9).ceil() as i64;
        let ticks: Vec<f64> = (first..=last).map(|k| scaled(k * m, e)).collect();
        let biggest = ticks.iter().fold(0.0_f64, |acc, t| acc.max(t.abs()));
        let labels = ticks.iter().map(|&t| linear_label(t, e, biggest)).collect();
        Axis {
            lo: ticks[0],
            hi: ticks[ticks.len() - 1],
            log: false,
            ticks,
            labels,
        }
    }

    /// A log₁₀ axis covering `[lo, hi]` (both > 0), ending at the 1-2-5 values
    /// just outside the data. Ticks go at 1, 2 and 5 while that makes at most
    /// nine, else at powers of ten (every second or third one on wide ranges).
    pub fn log(lo: f64, hi: f64) -> Axis {
        let (lo, hi) = if hi / lo < 1.0 + 1e-9 {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo, hi)
        };
        let (e_lo, e_hi) = (lo.log10().floor() as i32 - 1, hi.log10().ceil() as i32 + 1);
        let grid: Vec<(i64, i32)> = (e_lo..=e_hi)
            .flat_map(|e| [1, 2, 5].map(|m| (m, e)))
            .collect();
        let value = |&(m, e): &(i64, i32)| scaled(m, e);
        let start = grid
            .iter()
            .rposition(|g| value(g) <= lo * (1.0 + 1e-9))
            .unwrap_or(0);
        let end = grid
            .iter()
            .position(|g| value(g) >= hi * (1.0 - 1e-9))
            .unwrap_or(grid.len() - 1);
        let mut marks = grid[start..=end].to_vec();
        if marks.len() > MAX_LOG_TICKS {
            marks.retain(|&(m, _)| m == 1);
            let every = marks.len().div_ceil(MAX_LOG_TICKS).max(1);
            marks = marks.into_iter().step_by(every).collect();
        }
        Axis {
            lo: value(&grid[start]),
            hi: value(&grid[end]),
            log: true,
            ticks: marks.iter().map(value).collect(),
            labels: marks.iter().map(|&(m, e)| log_label(m, e)).collect(),
        }
    }

    /// Where `v` falls along the axis: 0 at `lo`, 1 at `hi`.
    pub fn fraction(&self, v: f64) -> f64 {
        if self.log {
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }
}

const MAX_LOG_TICKS: usize = 9;

/// The tick step for a span as `(m, e)`, meaning `m × 10^e` with m in {1, 2, 5}:
/// the smallest such step that cuts the span into at most `max_ticks` parts.
pub fn nice_step(span: f64, max_ticks: usize) -> (i64, i32) {
    let raw = span / max_ticks.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return (1, 0);
    }
    let mut e = raw.log10().floor() as i32;
    // log10 may land a hair off an exact power of ten; the loop corrects it.
    loop {
        let norm = raw / pow10(e);
        if norm > 10.0 * (1.0 + 1e-9) {
            e += 1;
        } else if norm <= 1.0 / (1.0 + 1e-9) {
            e -= 1;
        } else {
            let m = if norm <= 1.0 + 1e-9 {
                1
            } else if norm <= 2.0 + 1e-9 {
                2
            } else if norm <= 5.0 + 1e-9 {
                5
            } else {
                return (1, e + 1);
            };
            return (m, e);
        }
    }
}

/// A range with room in it: a single value gets 10% (or ±1 at zero) each side.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    let scale = lo.abs().max(hi.abs());
    if hi - lo > scale * 1e-9 {
        return (lo, hi);
    }
    let pad = if scale == 0.0 { 1.0 } else { scale * 0.1 };
    (lo - pad, hi + pad)
}

fn pow10(e: i32) -> f64 {
    10f64.powi(e)
}

/// `n × 10^e`, dividing for negative `e` so that e.g. 3 × 10⁻¹ is exactly 0.3.
fn scaled(n: i64, e: i32) -> f64 {
    let v = if e >= 0 {
        n as f64 * pow10(e)
    } else {
        n as f64 / pow10(-e)
    };
    v + 0.0 // turns -0 into 0
}

/// A linear tick label; past 10 000 the values are written in k or M.
fn linear_label(v: f64, e: i32, biggest: f64) -> String {
    let (unit, suffix) = if biggest >= 1e6 {
        (6, "M")
    } else if biggest >= 1e4 {
        (3, "k")
    } else {
        (0, "")
    };
    if v == 0.0 {
        return "0".to_string();
    }
    let decimals = (unit - e).max(0) as usize;
    format!("{:.*}{suffix}", decimals, v / pow10(unit))
}

fn log_label(m: i64, e: i32) -> String {
    if (-3..=4).contains(&e) {
        format!("{:.*}", (-e).max(0) as usize, scaled(m, e))
    } else {
        format!("{m}e{e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_round_up_to_one_two_five() {
        assert_eq!(nice_step(2.31, 5), (5, -1)); // raw 0.462 -> 0.5
        assert_eq!(nice_step(400.0, 5), (1, 2)); // raw 80 -> 100
        assert_eq!(nice_step(4.5, 5), (1, 0)); // raw 0.9 -> 1
        assert_eq!(nice_step(7.0, 5), (2, 0)); // raw 1.4 -> 2
        assert_eq!(nice_step(1e6, 5), (2, 5)); // raw 200 000 exactly
        assert_eq!(nice_step(0.03, 5), (1, -2)); // raw 0.006 -> 0.01
        assert_eq!(nice_step(1.0, 10), (1, -1)); // raw 0.1 exactly
    }

    #[test]
    fn linear_axis_widens_to_whole_steps() {
        let a = Axis::linear(0.0107, 2.31, 5, false);
        assert_eq!(a.ticks, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(a.labels, ["0", "0.5", "1.0", "1.5", "2.0", "2.5"]);
        assert_eq!((a.lo, a.hi), (0.0, 2.5));

        let steps = Axis::linear(1.0, 400.0, 8, true);
        assert_eq!(
            steps.ticks,
            [0.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0, 400.0]
        );

        let acc = Axis::linear(93.03, 97.49, 5, false);
        assert_eq!(acc.ticks, [93.0, 94.0, 95.0, 96.0, 97.0, 98.0]);

        let tenths = Axis::linear(0.3, 0.7, 4, false);
        assert_eq!(tenths.ticks, [0.3, 0.4, 0.5, 0.6, 0.7]);
        assert_eq!(tenths.labels, ["0.3", "0.4", "0.5", "0.6", "0.7"]);
    }

    #[test]
    fn degenerate_ranges_get_room() {
        let one_step = Axis::linear(1.0, 1.0, 8, true);
        assert_eq!(one_step.ticks, [0.0, 1.0, 2.0]);
        let constant = Axis::linear(0.5, 0.5, 5, false);
        assert_eq!(constant.ticks, [0.44, 0.46, 0.48, 0.5, 0.52, 0.54, 0.56]);
        let zero = Axis::linear(0.0, 0.0, 4, false);
        assert_eq!(zero.ticks, [-1.0, -0.5, 0.0, 0.5, 1.0]);
    }

    #[test]
    fn big_step_counts_read_in_thousands() {
        let a = Axis::linear(0.0, 1_000_000.0, 5, true);
        assert_eq!(a.labels, ["0", "0.2M", "0.4M", "0.6M", "0.8M", "1.0M"]);
        let b = Axis::linear(0.0, 25_000.0, 5, true);
        assert_eq!(b.labels, ["0", "5k", "10k", "15k", "20k", "25k"]);
    }

    #[test]
    fn log_axis_ticks() {
        let a = Axis::log(0.0107, 2.31);
        assert_eq!(a.ticks, [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]);
        assert_eq!(a.labels[..4], ["0.01", "0.02", "0.05", "0.1"]);
        let wide = Axis::log(1e-7, 10.0);
        assert_eq!(
            wide.labels,
            ["1e-7", "1e-6", "1e-5", "1e-4", "0.001", "0.01", "0.1", "1", "10"]
        );
        let mid = Axis::log(0.0043, 2.31);
        assert_eq!((mid.lo, mid.hi), (0.002, 5.0));
        assert_eq!(mid.ticks, [0.01, 0.1, 1.0]);
        let flat = Axis::log(3.0, 3.0);
        assert_eq!(flat.ticks, [1.0, 2.0, 5.0, 10.0]);
    }

    #[test]
    fn fraction_maps_ends_to_zero_and_one() {
        let a = Axis::log(0.01, 10.0);
        assert!((a.fraction(0.01)).abs() < 1e-12);
        assert!((a.fraction(10.0) - 1.0).abs() < 1e-12);
        assert!((a.fraction(0.1) - 1.0 / 3.0).abs() < 1e-12);
    }
}
