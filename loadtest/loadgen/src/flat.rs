//! The soak's flatness verdict: does a server figure sampled over time (VmRSS, open fds)
//! keep growing after the warm-up?
//!
//! The rule, on the samples taken at or after the warm-up (at least [`MIN_SAMPLES`]):
//! - the *first window* is the first fifth of them and the *last window* the last fifth
//!   (at least two samples each); `growth` = mean of the last window − mean of the first;
//! - a least-squares line through all of them gives `slope` per hour; `trend` = slope × the
//!   time they span (the line's rise from the first sample to the last);
//! - `tolerance` = max(`pct` % of the first window's mean, `floor`);
//! - the figure **grows** when both `growth` and `trend` exceed the tolerance. A leak raises
//!   both; a single spike or a saw-tooth (allocator, connections churning) moves at most one
//!   of them past the tolerance.

use serde::Serialize;

/// Fewest post-warm-up samples a verdict is given on.
pub const MIN_SAMPLES: usize = 6;

/// How much growth is tolerated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Percent of the first window's mean.
    pub pct: f64,
    /// Lower bound, in the figure's unit.
    pub floor: f64,
}

/// The verdict on one figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flatness {
    /// Samples judged (at or after the warm-up).
    pub samples: usize,
    /// Samples in each of the first and the last window.
    pub window_samples: usize,
    /// Mean of the first window.
    pub first_mean: f64,
    /// Mean of the last window.
    pub last_mean: f64,
    /// `last_mean - first_mean`.
    pub growth: f64,
    /// Least-squares slope, per hour.
    pub slope_per_hour: f64,
    /// The fitted line's rise over the judged span.
    pub trend: f64,
    /// Growth allowed.
    pub tolerance: f64,
    /// Neither `growth` nor `trend`, or only one of them, exceeds the tolerance.
    pub flat: bool,
}

/// Judges `points` (`(seconds since the start, value)`, in time order) from `warmup_s` on;
/// `None` if fewer than [`MIN_SAMPLES`] samples fall after the warm-up.
pub fn judge(points: &[(f64, f64)], warmup_s: f64, tolerance: Tolerance) -> Option<Flatness> {
    let judged: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|&(t, _)| t >= warmup_s)
        .collect();
    let n = judged.len();
    if n < MIN_SAMPLES {
        return None;
    }
    let k = (n / 5).max(2);
    let mean = |s: &[(f64, f64)]| s.iter().map(|p| p.1).sum::<f64>() / s.len() as f64;
    let first_mean = mean(&judged[..k]);
    let last_mean = mean(&judged[n - k..]);
    let growth = last_mean - first_mean;
    let slope = slope(&judged);
    let span = judged[n - 1].0 - judged[0].0;
    let trend = slope * span;
    let allowed = (tolerance.pct / 100.0 * first_mean.abs()).max(tolerance.floor);
    Some(Flatness {
        samples: n,
        window_samples: k,
        first_mean,
        last_mean,
        growth,
        slope_per_hour: slope * 3600.0,
        trend,
        tolerance: allowed,
        flat: !(growth > allowed && trend > allowed),
    })
}

/// Least-squares slope of `points` (value per second); 0 when time does not vary.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for &(t, v) in points {
        num += (t - mean_t) * (v - mean_v);
        den += (t - mean_t) * (t - mean_t);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance {
        pct: 5.0,
        floor: 100.0,
    };

    fn series(len: usize, value: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..len)
            .map(|i| {
                let t = i as f64 * 5.0;
                (t, value(t))
            })
            .collect()
    }

    #[test]
    fn a_flat_series_with_noise_is_flat() {
        let points = series(100, |t| {
            10_000.0
                + if (t as u64 / 5).is_multiple_of(2) {
                    300.0
                } else {
                    -300.0
                }
        });
        let v = judge(&points, 60.0, TOL).unwrap();
        assert!(v.flat, "{v:?}");
        assert!(v.growth.abs() < 400.0);
    }

    #[test]
    fn a_steady_leak_is_not_flat() {
        // 10 units per second over 440 s of judged samples: 4,400 units, far past 500.
        let points = series(100, |t| 10_000.0 + 10.0 * t);
        let v = judge(&points, 60.0, TOL).unwrap();
        assert!(!v.flat, "{v:?}");
        assert!((v.slope_per_hour - 36_000.0).abs() < 1.0);
    }

    #[test]
    fn growth_during_the_warm_up_does_not_count() {
        let points = series(100, |t| if t < 60.0 { t * 1000.0 } else { 60_000.0 });
        assert!(judge(&points, 60.0, TOL).unwrap().flat);
        assert!(!judge(&points, 0.0, TOL).unwrap().flat);
    }

    #[test]
    fn one_spike_at_the_end_alone_is_not_growth() {
        // The last sample jumps: the window means move, the fitted line barely does.
        let mut points = series(100, |_| 10_000.0);
        points.last_mut().unwrap().1 = 12_000.0;
        let v = judge(&points, 0.0, TOL).unwrap();
        assert!(v.flat, "{v:?}");
    }

    #[test]
    fn the_tolerance_is_a_percentage_with_a_floor() {
        let small = series(20, |t| 10.0 + t); // first mean ~17, 5 % of it < floor 100
        assert_eq!(judge(&small, 0.0, TOL).unwrap().tolerance, 100.0);
        let big = series(20, |_| 1_000_000.0);
        assert_eq!(judge(&big, 0.0, TOL).unwrap().tolerance, 50_000.0);
    }

    #[test]
    fn too_few_samples_after_the_warm_up_give_no_verdict() {
        let points = series(10, |_| 1.0);
        assert!(judge(&points, 30.0, TOL).is_none());
        assert!(judge(&points, 0.0, TOL).is_some());
    }
}
