//! Fitting Gunther's Universal Scalability Law to measured (concurrency,
//! throughput) points.
//!
//! `X(N) = λN / (1 + σ(N−1) + κN(N−1))`. For fixed σ and κ the best λ is a
//! closed form (X is linear in λ), so the search is over σ and κ only: a grid,
//! then a few rounds of a finer grid around the best cell. σ and κ are kept in
//! [0, 1], where they mean something (the `usl` crate fits them unconstrained,
//! panics when the fit fails and is archived, hence these forty lines).

use reports::results::UslFit;

/// Least-squares fit to `(n, x)` points; none with fewer than three distinct
/// concurrencies (a curve needs them) or no positive throughput.
pub fn fit(points: &[(f64, f64)]) -> Option<UslFit> {
    let mut concurrencies: Vec<f64> = points.iter().map(|&(n, _)| n).collect();
    concurrencies.sort_by(f64::total_cmp);
    concurrencies.dedup();
    if concurrencies.len() < 3 || points.iter().all(|&(_, x)| x <= 0.0) {
        return None;
    }
    let mut best = (f64::INFINITY, 0.0, 0.0, 0.0);
    let (mut sigma_range, mut log_kappa_range) = ((0.0, 1.0), (-9.0, 0.0));
    for _round in 0..6 {
        for i in 0..=40 {
            let sigma = lerp(sigma_range, i as f64 / 40.0);
            // κ = 0 is tried on every round; otherwise κ is searched on a log scale.
            for j in 0..=41 {
                let kappa = if j == 41 {
                    0.0
                } else {
                    10f64.powf(lerp(log_kappa_range, j as f64 / 40.0))
                };
                let (lambda, sse) = best_lambda(points, sigma, kappa);
                if sse < best.0 {
                    best = (sse, sigma, kappa, lambda);
                }
            }
        }
        let (_, sigma, kappa, _) = best;
        let sigma_step = (sigma_range.1 - sigma_range.0) / 40.0;
        sigma_range = ((sigma - 2.0 * sigma_step).max(0.0), (sigma + 2.0 * sigma_step).min(1.0));
        let log_step = (log_kappa_range.1 - log_kappa_range.0) / 40.0;
        let centre = if kappa > 0.0 { kappa.log10() } else { log_kappa_range.0 };
        log_kappa_range = ((centre - 2.0 * log_step).max(-12.0), (centre + 2.0 * log_step).min(0.0));
    }
    let (sse, sigma, kappa, lambda) = best;
    let mean = points.iter().map(|&(_, x)| x).sum::<f64>() / points.len() as f64;
    let total: f64 = points.iter().map(|&(_, x)| (x - mean).powi(2)).sum();
    let r_squared = if total > 0.0 { 1.0 - sse / total } else { 1.0 };
    Some(UslFit {
        sigma,
        kappa,
        lambda,
        r_squared,
    })
}

fn lerp((low, high): (f64, f64), t: f64) -> f64 {
    low + (high - low) * t
}

/// The λ that minimises the squared error for this σ and κ, and that error.
fn best_lambda(points: &[(f64, f64)], sigma: f64, kappa: f64) -> (f64, f64) {
    let shape = |n: f64| n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0));
    let (xg, gg) = points.iter().fold((0.0, 0.0), |(xg, gg), &(n, x)| {
        (xg + x * shape(n), gg + shape(n).powi(2))
    });
    let lambda = if gg > 0.0 { xg / gg } else { 0.0 };
    let sse = points.iter().map(|&(n, x)| (x - lambda * shape(n)).powi(2)).sum();
    (lambda, sse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled(model: UslFit, ns: &[f64]) -> Vec<(f64, f64)> {
        ns.iter().map(|&n| (n, model.throughput_at(n))).collect()
    }

    const LADDER: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0];

    #[test]
    fn the_fit_recovers_the_coefficients_of_a_retrograde_system() {
        let truth = UslFit {
            sigma: 0.05,
            kappa: 0.0002,
            lambda: 40.0,
            r_squared: 1.0,
        };
        let fitted = fit(&sampled(truth, &LADDER)).unwrap();
        assert!((fitted.sigma - 0.05).abs() < 0.002, "{fitted:?}");
        assert!((fitted.kappa - 0.0002).abs() < 0.00002, "{fitted:?}");
        assert!((fitted.lambda - 40.0).abs() < 0.5, "{fitted:?}");
        assert!(fitted.r_squared > 0.999);
        let peak = fitted.peak_concurrency().unwrap();
        assert!((peak - (0.95f64 / 0.0002).sqrt()).abs() < 5.0, "peak at {peak}");
    }

    #[test]
    fn a_system_that_only_levels_off_has_no_coherency_cost_and_no_peak() {
        let truth = UslFit {
            sigma: 0.08,
            kappa: 0.0,
            lambda: 30.0,
            r_squared: 1.0,
        };
        let fitted = fit(&sampled(truth, &LADDER)).unwrap();
        assert!(fitted.kappa < 1e-6, "{fitted:?}");
        assert!(
            (fitted.max_throughput() - 30.0 / 0.08).abs() / 375.0 < 0.05,
            "{fitted:?}"
        );
    }

    #[test]
    fn noisy_points_still_fit_and_say_how_well() {
        let truth = UslFit {
            sigma: 0.1,
            kappa: 0.001,
            lambda: 50.0,
            r_squared: 1.0,
        };
        let noisy: Vec<_> = sampled(truth, &LADDER)
            .into_iter()
            .enumerate()
            .map(|(i, (n, x))| (n, x * if i % 2 == 0 { 1.04 } else { 0.96 }))
            .collect();
        let fitted = fit(&noisy).unwrap();
        assert!(fitted.r_squared > 0.9 && fitted.r_squared < 1.0, "{fitted:?}");
        assert!((fitted.sigma - 0.1).abs() < 0.05, "{fitted:?}");
    }

    #[test]
    fn too_few_points_give_no_fit() {
        assert!(fit(&[(1.0, 10.0), (2.0, 19.0)]).is_none());
        assert!(fit(&[(1.0, 0.0), (2.0, 0.0), (4.0, 0.0)]).is_none());
        // The same step repeated is a spread, not a curve.
        assert!(fit(&[(20.0, 300.0), (20.0, 280.0), (20.0, 310.0), (20.0, 290.0)]).is_none());
    }
}
